"""``refine_labels``: any instance label image (Cellpose, StarDist, a threshold, rough painting)
as prompts, one object per label.

Every label of a plane becomes one object, prompted by its bounding box (XYXY, the first and
last pixel's row and column, segment-anything's inclusive convention) and, with
``mask_prompt=True``, by its own mask as SAM's ``mask_input``. All objects of a plane are
decoded in batches (:mod:`~napari_mobilesam.engine.point_objects`), so each refined mask is the
one ``SamPredictor.predict(box=..., mask_input=...)`` gives for that label alone.

**Mask to logits** (:func:`~napari_mobilesam.engine.mask_prompts.mask_to_logits`): the label's
mask resized to the padded 1024 x 1024 model frame, the fraction of each low-res pixel inside
it, as log-odds clipped to +-6.9 (the padding 0); upscaled the way SAM upscales its own logits,
this map gives back the label's mask up to its edge pixels.

**Rules**: overlaps between refined masks go to the higher predicted IoU
(:func:`~napari_mobilesam.engine.point_objects.resolve_overlaps`); a label whose refined mask
is empty (or loses every pixel to overlaps) is left out of the result and listed in
:attr:`RefineResult.lost`. Ids: by default every refined object keeps its source id; with
``new_ids=True`` the ids are renumbered 1..K in increasing order of the source ids (the same
source id on several planes keeps one new id, so 3D objects stay whole). A label touching the
border is prompted by its box as it is; a one-pixel label by a one-pixel box.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .image_conversion import robust_limits, shrink_for_encoder, to_uint8_rgb
from .mask_prompts import FRAME, label_logits
from .point_objects import (
    MAX_OBJECTS,
    ObjectPrompt,
    check_object_count,
    decode_objects_steps,
)
from .steps import Cancelled, drive
from .transforms import ResizeLongestSide


class RefineCancelled(Cancelled):
    """Raised by :func:`refine_labels` when ``cancel`` asked it to stop; nothing is returned."""


@dataclass
class RefineProgress:
    """Yielded by :func:`refine_labels_steps` after each batch of objects.

    Attributes:
      plane: the plane being refined (None for a 2D image).
      planes_done / n_planes: planes finished / to do.
      objects_done / objects_total: objects decoded on the current plane.
    """

    plane: int | None
    planes_done: int
    n_planes: int
    objects_done: int
    objects_total: int

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1]."""
        within = self.objects_done / self.objects_total if self.objects_total else 1.0
        return min(1.0, (self.planes_done + within) / max(self.n_planes, 1))


@dataclass
class RefineResult:
    """What :func:`refine_labels_steps` returns.

    Attributes:
      labels: the refined labels, the shape of the source labels.
      lost: source ids (per plane for a stack: (plane, id)) that came out empty.
      objects: objects decoded.
    """

    labels: np.ndarray
    lost: list[Any] = field(default_factory=list)
    objects: int = 0


def label_boxes(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels of one plane and their boxes.

    Arguments:
      plane: (H, W) integer labels, 0 = background.

    Returns:
      ids (K,) in increasing order; boxes (K, 4) float64 XYXY, inclusive (first and last
      column and row); compact (H, W) int32 labels 1..K in the order of ``ids``.
    """
    ids, inverse = np.unique(plane, return_inverse=True)
    compact = inverse.reshape(plane.shape).astype(np.int32)
    if ids.size and ids[0] == 0:
        ids = ids[1:]
    else:  # no background at all: shift so that 0 stays "none"
        compact += 1
    boxes = np.zeros((len(ids), 4), dtype=np.float64)
    for k, sl in enumerate(ndimage.find_objects(compact, max_label=len(ids))):
        rows, cols = sl
        boxes[k] = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
    return ids, boxes, compact


def plane_prompts(
    plane: np.ndarray, input_size: tuple[int, int], mask_prompt: bool = True
) -> tuple[np.ndarray, list[ObjectPrompt]]:
    """(ids, one box prompt per label, with its mask as ``mask_input`` if ``mask_prompt``)."""
    ids, boxes, compact = label_boxes(plane)
    logits: list[np.ndarray | None] = [None] * len(ids)
    if mask_prompt:
        # Each label's logits from a window around its box (engine/mask_prompts.py).
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            logits[k] = label_logits(compact, k + 1, (y0, y1, x0, x1), input_size)[None]
    prompts = [ObjectPrompt(box=boxes[k], mask_input=logits[k]) for k in range(len(ids))]
    return ids, prompts


def _predictor(predictor_or_model: Any) -> Any:
    """A ``SamPredictor`` from a predictor, a ``MobileSAM`` or a model."""
    if hasattr(predictor_or_model, "predict_torch"):
        return predictor_or_model
    inner = getattr(predictor_or_model, "predictor", None)
    if inner is not None and hasattr(inner, "predict_torch"):
        return inner
    if hasattr(predictor_or_model, "predict") and hasattr(predictor_or_model, "set_image"):
        return predictor_or_model  # a predictor stand-in (decoded one object at a time)
    from .predictor import SamPredictor

    return SamPredictor(predictor_or_model)


def _is_rgb(shape: tuple[int, ...], rgb: bool | None, label_ndim: int) -> bool:
    if rgb is not None:
        return bool(rgb)
    return len(shape) == label_ndim + 1 and shape[-1] in (3, 4)


def check_label_input(image_shape: tuple[int, ...], labels: Any, rgb: bool) -> np.ndarray:
    """The labels as an integer array on the image's grid, or a ValueError naming ``labels``."""
    labels = np.asarray(labels)
    spatial = image_shape[:-1] if rgb else image_shape
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must hold integer ids (0 = background), got dtype {labels.dtype}."
        )
    if tuple(labels.shape) != tuple(spatial):
        raise ValueError(
            f"labels has shape {tuple(labels.shape)} but the image's grid is {tuple(spatial)}; "
            "give labels of the same image (the same rows and columns, and planes for a stack)."
        )
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be (H, W) or (Z, H, W), got shape {labels.shape}.")
    if labels.size and labels.min() < 0:
        raise ValueError("labels holds negative ids; ids must be >= 0 (0 = background).")
    if not labels.any():
        raise ValueError("labels holds no label (every pixel is 0): nothing to refine.")
    return labels


def refine_plane_steps(
    predictor: Any,
    plane: np.ndarray,
    *,
    mask_prompt: bool = True,
    multimask_output: bool = False,
    batch_size: int = 32,
    max_objects: int = MAX_OBJECTS,
    progress: Callable[[int, int], Any] = lambda done, total: (done, total),
) -> Generator[Any, None, tuple[np.ndarray, list[int], int]]:
    """Refine the labels of one plane on the predictor's current image.

    Returns (refined (H, W) labels with the source ids, lost source ids, objects decoded).
    """
    input_size = getattr(predictor, "input_size", None)
    if input_size is None:  # a stand-in without SamPredictor's sizes: the same frame rule
        input_size = ResizeLongestSide.get_preprocess_shape(*plane.shape, FRAME)
    ids, prompts = plane_prompts(plane, input_size, mask_prompt)
    out = np.zeros(plane.shape, dtype=plane.dtype)
    if not prompts:
        yield progress(0, 0)
        return out, [], 0
    check_object_count(len(prompts), max_objects, "labels on one plane")
    decoded = yield from _mapped(
        decode_objects_steps(predictor, prompts, multimask_output, batch_size, max_objects),
        progress,
    )
    index = decoded.labels()  # 1..K by the overlap rule
    lookup = np.concatenate([[0], ids]).astype(plane.dtype)
    out = lookup[index]
    present = np.zeros(len(ids) + 1, dtype=bool)
    present[np.unique(index)] = True
    lost = [int(i) for i, kept in zip(ids, present[1:], strict=True) if not kept]
    return out, lost, len(prompts)


def _mapped(steps: Generator, progress: Callable[[int, int], Any]) -> Generator:
    try:
        while True:
            try:
                item = next(steps)
            except StopIteration as stop:
                return stop.value
            yield progress(item.prompts_done, item.prompts_total)
    finally:
        steps.close()


def _limits_2d(image: Any, contrast_limits: tuple[float, float] | None) -> Any:
    if contrast_limits is not None:
        return contrast_limits
    if np.dtype(getattr(image, "dtype", np.uint8)) == np.uint8:
        return None
    return robust_limits(shrink_for_encoder(image))


def _set_plane(predictor: Any, image: np.ndarray, size: tuple[int, int]) -> None:
    if image.shape[:2] == size:
        predictor.set_image(image)
    else:  # reduced from a huge plane: prompts and masks keep the plane's pixels
        predictor.set_image(image, original_size=size)


def refine_labels_steps(
    image: Any,
    labels: Any,
    predictor_or_model: Any,
    *,
    new_ids: bool = False,
    mask_prompt: bool = True,
    multimask_output: bool = False,
    planes: Iterable[int] | None = None,
    rgb: bool | None = None,
    contrast_limits: tuple[float, float] | None = None,
    stack: Any = None,
    batch_size: int = 32,
    max_objects: int = MAX_OBJECTS,
) -> Generator[RefineProgress, None, RefineResult]:
    """:func:`refine_labels` as a generator of :class:`RefineProgress` (same arguments, without
    ``progress`` and ``cancel``); returns a :class:`RefineResult`."""
    shape = tuple(int(s) for s in np.shape(image))
    label_ndim = len(np.shape(labels))
    is_rgb = _is_rgb(shape, rgb, label_ndim)
    labels = check_label_input(shape, labels, is_rgb)
    predictor = _predictor(predictor_or_model)
    plane_shape = (int(labels.shape[-2]), int(labels.shape[-1]))
    result = RefineResult(np.zeros(labels.shape, dtype=labels.dtype))

    if labels.ndim == 2:
        if planes is not None or stack is not None:
            raise ValueError("planes and stack are for 3D stacks; this image is 2D.")
        limits = _limits_2d(image, contrast_limits)
        pixels = to_uint8_rgb(shrink_for_encoder(image), limits, rgb=is_rgb)
        _set_plane(predictor, pixels, plane_shape)
        yield RefineProgress(None, 0, 1, 0, 0)
        out, lost, count = yield from refine_plane_steps(
            predictor, labels, mask_prompt=mask_prompt, multimask_output=multimask_output,
            batch_size=batch_size, max_objects=max_objects,
            progress=lambda d, t: RefineProgress(None, 0, 1, d, t),
        )  # fmt: skip
        result.labels, result.lost, result.objects = out, lost, count
    else:
        n_planes = labels.shape[0]
        chosen = sorted(set(range(n_planes) if planes is None else (int(p) for p in planes)))
        if not chosen or chosen[0] < 0 or chosen[-1] >= n_planes:
            raise ValueError(f"planes must be indices in 0..{n_planes - 1}, got {planes!r}.")
        chosen = [p for p in chosen if labels[p].any()]  # empty planes need no embedding
        embeddings = stack
        if embeddings is None:
            from .stack import StackEmbeddings

            embeddings = StackEmbeddings(
                predictor, image, contrast_limits=contrast_limits, rgb=is_rgb
            )
        for done, p in enumerate(chosen):
            embedding, size = embeddings.get(p)
            predictor.set_image_embedding(embedding, size)
            yield RefineProgress(p, done, len(chosen), 0, 0)
            out, lost, count = yield from refine_plane_steps(
                predictor, labels[p], mask_prompt=mask_prompt,
                multimask_output=multimask_output, batch_size=batch_size,
                max_objects=max_objects,
                progress=lambda d, t, p=p, done=done: RefineProgress(p, done, len(chosen), d, t),
            )  # fmt: skip
            result.labels[p] = out
            result.lost += [(p, i) for i in lost]
            result.objects += count
    if new_ids:
        result.labels = renumber(result.labels)
    return result


def renumber(labels: np.ndarray) -> np.ndarray:
    """Ids 1..K in increasing order of the old ids (int32 for up to 2**31 - 1 objects)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids.size and ids[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int32)


def refine_labels(
    image: Any,
    labels: Any,
    predictor_or_model: Any,
    *,
    new_ids: bool = False,
    mask_prompt: bool = True,
    multimask_output: bool = False,
    planes: Iterable[int] | None = None,
    rgb: bool | None = None,
    contrast_limits: tuple[float, float] | None = None,
    stack: Any = None,
    batch_size: int = 32,
    max_objects: int = MAX_OBJECTS,
    progress: bool | Callable[[RefineProgress], None] = False,
    cancel: Callable[[], bool] | threading.Event | None = None,
) -> np.ndarray:
    """Refine an instance label image with MobileSAM, one object per label.

    Example::

        from napari_mobilesam import MobileSAM, refine_labels
        refined = refine_labels(image, cellpose_masks, MobileSAM("mobile_sam.pt"))

    Arguments:
      image: (H, W), (H, W, 3), (Z, H, W) or (Z, H, W, 3); numpy, dask or zarr.
      labels: integer labels on the image's grid ((H, W) or (Z, H, W)), 0 = background; it is
        only read.
      predictor_or_model: a ``SamPredictor``, a ``MobileSAM`` or a model.
      new_ids: renumber the result 1..K instead of keeping the source ids.
      mask_prompt: add each label's mask as ``mask_input`` to its box (see
        :func:`mask_to_logits`); False prompts with the box alone.
      multimask_output: each object takes the best of 3 candidates (False: SAM's single mask,
        the usual choice for a box).
      planes: for a stack, the planes to refine (default all); the others stay 0.
      rgb: whether the image's last axis is colour (None: guessed from the shapes).
      contrast_limits: (lo, hi) mapped to 0..255 (None: uint8 as is, others robust limits).
      stack: a :class:`~napari_mobilesam.engine.stack.StackEmbeddings` of the image to reuse
        its cached embeddings.
      batch_size: objects decoded together (memory, not the result).
      max_objects: refuse a plane with more labels than this (ValueError).
      progress: True for a terminal bar, or a function called with every
        :class:`RefineProgress`.
      cancel: a function returning True (or a ``threading.Event`` that is set) to stop.

    Returns:
      Refined labels, the shape of ``labels`` (its dtype; int32 with ``new_ids``).

    Raises:
      ValueError: labels on another grid, not integer, negative, or all 0.
      RefineCancelled: ``cancel`` asked to stop; nothing is returned.
    """
    steps = refine_labels_steps(
        image, labels, predictor_or_model, new_ids=new_ids, mask_prompt=mask_prompt,
        multimask_output=multimask_output, planes=planes, rgb=rgb,
        contrast_limits=contrast_limits, stack=stack, batch_size=batch_size,
        max_objects=max_objects,
    )  # fmt: skip
    report = progress
    bar = None
    if progress is True:
        from .steps import TerminalProgress

        bar = report = TerminalProgress("refine labels", lambda item: item.fraction)
    try:
        result = drive(
            steps,
            report or None,
            cancel,
            cancelled=lambda: RefineCancelled(
                "Refining labels was cancelled; nothing is returned."
            ),
        )
    finally:
        if bar is not None:
            bar.close()
    return result.labels


def refine_plane(predictor: Any, plane: np.ndarray, **options: Any) -> np.ndarray:
    """:func:`refine_plane_steps` run to its end: the refined (H, W) labels (source ids)."""
    labels, _, _ = drive(refine_plane_steps(predictor, plane, **options))
    return labels
