"""One object per point on napari layers: prompt groups per point, batched decoding, overlaps.

In "one object per point" mode the grouping rule of
:mod:`~napari_mobilesam.layers.layer_prompts` changes for the points outside every rectangle:
each positive one is its own object, and every negative one outside the rectangles is added to
each of those objects as background (:func:`~napari_mobilesam.engine.point_objects.
each_point_prompts`). Rectangles stay one object each, with the points inside them.

The objects of a run are decoded together in batches
(:func:`~napari_mobilesam.engine.point_objects.decode_objects_steps`); each keeps only its chosen
candidate. Where their masks overlap, the higher predicted IoU keeps the pixel
(:func:`resolved_masks`); the preview and the commit both follow that rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np

from napari_mobilesam.engine.point_objects import (
    ObjectPrompt,
    decode_objects_steps,
    resolve_overlaps,
)
from napari_mobilesam.layers.layer_prompts import PromptGroup


def each_point_groups(groups: Sequence[PromptGroup]) -> list[PromptGroup]:
    """Split the group of free points (no rectangle) into one group per positive point.

    Rectangle groups are kept as they are and come first, as in the usual grouping.
    """
    out: list[PromptGroup] = []
    for group in groups:
        if group.box is not None or len(group.point_coords) == 0:
            out.append(group)
            continue
        labels = np.asarray(group.point_labels)
        negatives = np.flatnonzero(labels == 0)
        for k in np.flatnonzero(labels == 1):
            members = np.concatenate([[k], negatives]).astype(int)
            out.append(
                PromptGroup(
                    point_coords=np.asarray(group.point_coords)[members].reshape(-1, 2),
                    point_labels=labels[members],
                    point_indices=tuple(group.point_indices[m] for m in members)
                    if group.point_indices
                    else (),
                )
            )
    return out


def can_batch(predictor: Any) -> bool:
    """Whether ``predictor`` is a ``SamPredictor`` (batched decoding needs its internals)."""
    return hasattr(predictor, "predict_torch") and hasattr(predictor, "_decoder_constants")


def decode_groups_steps(
    predictor: Any,
    groups: Sequence[PromptGroup],
    mask_inputs: Sequence[np.ndarray | None],
    multimask_output: bool,
    progress: Callable[[float], Any],
) -> Generator[Any, None, tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], float]]:
    """Decode the groups in batches on the predictor's image.

    Arguments:
      groups: the objects to decode.
      mask_inputs: per group, (1, 256, 256) logits to refine from, or None.
      progress: makes the item yielded after each batch from that batch's seconds.

    Returns:
      (per group (masks (1, H, W), scores (1,), low-res (1, 256, 256)), seconds in all).
    """
    prompts = []
    for group, mask_input in zip(groups, mask_inputs, strict=True):
        kwargs = group.predict_kwargs()
        prompts.append(
            ObjectPrompt(
                point_coords=kwargs["point_coords"],
                point_labels=kwargs["point_labels"],
                box=kwargs["box"],
                mask_input=mask_input,
            )
        )
    if not prompts:
        return [], 0.0
    steps = decode_objects_steps(predictor, prompts, multimask_output)
    total = 0.0
    try:
        while True:
            start = time.perf_counter()
            try:
                next(steps)
            except StopIteration as stop:
                decoded = stop.value
                total += time.perf_counter() - start
                break
            seconds = time.perf_counter() - start
            total += seconds
            yield progress(seconds)
    finally:
        steps.close()
    out = [
        (decoded.mask(i)[None], decoded.scores[i : i + 1], decoded.low_res_logits[i : i + 1])
        for i in range(len(decoded))
    ]
    return out, total


def resolved_masks(objects: Sequence[Any]) -> list[np.ndarray]:
    """The objects' chosen masks after the overlap rule (the higher predicted IoU keeps a
    pixel, the earlier object on equal scores); all objects must lie on one plane."""
    if not objects:
        return []
    shape = objects[0].mask.shape
    labels = resolve_overlaps([o.mask for o in objects], [o.score for o in objects], shape)
    return [labels == i for i in range(1, len(objects) + 1)]


def resolved_objects(objects: Sequence[Any]) -> list[Any]:
    """Copies of the objects holding only their pixels after the overlap rule (to commit)."""
    from dataclasses import replace

    out = []
    for obj, mask in zip(objects, resolved_masks(objects), strict=True):
        out.append(
            replace(
                obj,
                masks=mask[None],
                scores=np.asarray([obj.score], dtype=np.float32),
                low_res_logits=obj.low_res[None],
                chosen=0,
            )
        )
    return out
