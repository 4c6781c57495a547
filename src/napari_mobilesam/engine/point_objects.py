"""Many objects on one image, decoded together: one object per point, per box, per label.

Every object has its own prompt (:class:`ObjectPrompt`). The objects of an image are decoded in
batches on its one embedding, as :meth:`SamPredictor.predict_torch` does for a batch, but only to
the decoder's 256 x 256 logits; only the chosen candidate of each object (the best predicted IoU
of the three with multimask output, or the single one) is upscaled to the image's size. Each
object's mask therefore is the one ``SamPredictor.predict`` gives for that object's prompts alone
(up to float rounding of batched matrix products: a pixel can differ only where that call's
logit is within about 1e-3 of the 0 threshold, the golden tests' tolerance).

Rules:

- **One object per point** (:func:`each_point_prompts`): every positive point is one object;
  every negative point is added to every object's prompt as background (after its positive point,
  in the order given).
- **Overlaps** (:func:`resolve_overlaps`): where masks of one run overlap, the object with the
  higher predicted IoU keeps the pixel; on equal scores the earlier object keeps it.
- **Limits**: at most ``max_objects`` (default :data:`MAX_OBJECTS`) objects per image; more is
  refused with a ValueError naming the argument, before anything is decoded. Masks are kept as
  packed bits of their bounding boxes (:class:`~.mask_records.PackedMask`), so a few thousand
  objects on a large image stay small in memory.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .decoder_precision import decoder_autocast
from .mask_records import PackedMask
from .mask_upscaling import binary_crops
from .predictor import _check_near_image
from .prompt_checks import as_float_array, as_mask_input, check_labels
from .prompt_threads import map_groups

MAX_OBJECTS = 5000
# Prompts decoded together on a CPU: 2 at a time ran fastest, as for the generator's
# SamAutomaticMaskGenerator.decode_chunk (each prompt's decoder streams its own copies of the
# image tokens, and 2 at a time keep them in cache).
CPU_DECODE_CHUNK = 2
# Objects whose chosen mask is upscaled to the image's size together.
UPSCALE_CHUNK = 4


@dataclass(frozen=True)
class ObjectPrompt:
    """The prompts of one object, in image pixels, SAM's (x, y) order.

    Attributes:
      point_coords: (N, 2) float64 points (x, y), or None.
      point_labels: (N,) int64, 1 = object, 0 = background, or None.
      box: (4,) float64 XYXY box, or None.
      mask_input: (1, 256, 256) float32 low-res logits, or None.
    """

    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None

    def predict_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``SamPredictor.predict`` for this object alone."""
        return {
            "point_coords": self.point_coords,
            "point_labels": self.point_labels,
            "box": self.box,
            "mask_input": self.mask_input,
        }

    def signature(self) -> tuple[int, bool, bool]:
        """(points, has box, has mask): prompts with one signature can share a batch."""
        n = 0 if self.point_coords is None else len(self.point_coords)
        return n, self.box is not None, self.mask_input is not None


@dataclass
class DecodedObjects:
    """The chosen mask of every object, in prompt order.

    Attributes:
      masks: one packed mask per object (in the image's (H, W) frame).
      scores: (N,) float32 predicted IoU of each chosen mask.
      low_res_logits: (N, 256, 256) float32 logits of each chosen mask (SAM's ``mask_input``).
      chosen: (N,) index of the chosen candidate among those the decoder gave.
      shape: (H, W) of the image.
    """

    masks: list[PackedMask]
    scores: np.ndarray
    low_res_logits: np.ndarray
    chosen: np.ndarray
    shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.masks)

    def mask(self, index: int) -> np.ndarray:
        """(H, W) bool mask of object ``index``."""
        return self.masks[index].to_mask()

    def labels(self) -> np.ndarray:
        """(H, W) int32 labels, object i = i + 1, overlaps by :func:`resolve_overlaps`."""
        return resolve_overlaps(self.masks, self.scores, self.shape)


@dataclass
class DecodeProgress:
    """Yielded by :func:`decode_objects_steps` after each batch."""

    prompts_done: int
    prompts_total: int


def each_point_prompts(
    point_coords: np.ndarray | Sequence, point_labels: np.ndarray | Sequence | None = None
) -> list[ObjectPrompt]:
    """One object per positive point; every negative point joins every object as background.

    Arguments:
      point_coords: (N, 2) points (x, y) in image pixels.
      point_labels: (N,) 1 = object, 0 = background (None: all objects).

    Returns:
      One :class:`ObjectPrompt` per positive point, in the order given (empty without any).
    """
    coords = as_float_array(point_coords, "point_coords", "(N, 2) (x, y) points")
    if coords.size == 0:
        return []
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"point_coords must be (N, 2) (x, y) points, got {coords.shape}.")
    if point_labels is None:
        labels = np.ones(len(coords), dtype=np.int64)
    else:
        labels = as_float_array(point_labels, "point_labels", "(N,) labels, 1 or 0")
        if labels.shape != (len(coords),):
            raise ValueError(
                f"point_labels must be ({len(coords)},) to match point_coords, got {labels.shape}."
            )
        labels = check_labels(labels, "point_labels")
    negatives = coords[labels == 0]
    prompts = []
    for point in coords[labels == 1]:
        prompts.append(
            ObjectPrompt(
                point_coords=np.vstack([point[None], negatives]),
                point_labels=np.concatenate([[1], np.zeros(len(negatives), dtype=np.int64)]),
            )
        )
    return prompts


def check_object_count(n_objects: int, max_objects: int, what: str = "objects") -> None:
    """Refuse more than ``max_objects`` objects with a message that says what to change."""
    if n_objects > max_objects:
        raise ValueError(
            f"{n_objects} {what} is more than max_objects={max_objects}; decode them in parts, "
            "raise max_objects, or (for seeds) raise the threshold or the diameter."
        )


def _model_prompts(
    predictor: Any, prompts: Sequence[ObjectPrompt]
) -> tuple[torch.Tensor | None, ...]:
    """The batch of prompts as tensors in the model's 1024 frame, converted one object at a
    time exactly as ``SamPredictor.predict`` converts them (float64, then float32)."""
    size = predictor.original_size
    device = predictor.device
    first = prompts[0]
    coords = labels = boxes = masks = None
    if first.point_coords is not None:
        for p in prompts:
            _check_near_image(p.point_coords, size, "point_coords")
        coords = torch.as_tensor(
            np.stack([predictor.transform.apply_coords(p.point_coords, size) for p in prompts]),
            dtype=torch.float,
            device=device,
        )
        labels = torch.as_tensor(
            np.stack([p.point_labels for p in prompts]), dtype=torch.int, device=device
        )
    if first.box is not None:
        for p in prompts:
            _check_near_image(p.box.reshape(2, 2), size, "box")
        boxes = torch.as_tensor(
            np.stack([predictor.transform.apply_boxes(p.box, size)[0] for p in prompts]),
            dtype=torch.float,
            device=device,
        )
    if first.mask_input is not None:
        masks = torch.as_tensor(
            np.stack([as_mask_input(p.mask_input) for p in prompts]), device=device
        )
    return coords, labels, boxes, masks


@torch.inference_mode()
def _decode_low_res(
    predictor: Any, prompts: Sequence[ObjectPrompt], multimask_output: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, 256, 256) logits and (B, C) predicted IoUs of prompts with one signature.

    ``SamPredictor.predict_torch`` without the upscaling (the same prompt encoder, decoder and
    per-image decoder constants).
    """
    model = predictor.model
    coords, labels, boxes, masks = _model_prompts(predictor, prompts)
    sparse, dense = model.prompt_encoder(
        points=None if coords is None else (coords, labels), boxes=boxes, masks=masks
    )
    image_pe, constants = predictor._decoder_constants()
    if masks is not None:
        constants = None  # a mask prompt changes the image tokens: nothing to reuse
    batch = sparse.shape[0]
    step = CPU_DECODE_CHUNK if predictor.device.type == "cpu" else batch
    precision = getattr(predictor, "decoder_precision", "fp32")

    @torch.inference_mode()
    def decode(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        part = slice(start, start + step)
        # The predictor's decoder precision (fp32, or an opt-in bf16 autocast), as predict's.
        with decoder_autocast(precision, predictor.device):
            lr, io = model.mask_decoder(
                image_embeddings=predictor.features,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse[part],
                dense_prompt_embeddings=dense[part],
                multimask_output=multimask_output,
                image_constants=constants,
            )
        return lr.float(), io.float()

    # Groups side by side, one torch thread each, on a CPU (engine/prompt_threads.py).
    low_res, iou = zip(*map_groups(decode, range(0, batch, step), predictor.device), strict=True)
    return torch.cat(low_res), torch.cat(iou)


@torch.inference_mode()
def _upscale_chosen(
    predictor: Any, low_res: torch.Tensor, iou: torch.Tensor
) -> tuple[list[PackedMask], np.ndarray, np.ndarray, np.ndarray]:
    """Pack the best-scored candidate of each object at the image's size."""
    chosen = iou.float().argmax(dim=1)
    rows = torch.arange(low_res.shape[0], device=low_res.device)
    best = low_res[rows, chosen][:, None]  # (B, 1, 256, 256)
    model = predictor.model
    size = (predictor.input_size, predictor.original_size)
    shape = tuple(int(v) for v in predictor.original_size)
    packed = []
    # A few masks at a time: their full-size logits stay in cache and are never all held at
    # once (32 of them at 1024 x 1024 are 128 MiB, and allocating that took half the time).
    for part in best.split(UPSCALE_CHUNK):
        # Each mask upscaled only around its positive logits where that is exact, as in
        # SamPredictor (engine/mask_upscaling.py).
        crops = binary_crops(part[:, 0], *size, model.postprocess_masks, model.mask_threshold)
        packed.extend(PackedMask.from_mask(c.cpu().numpy(), at, shape) for c, at in crops)
    return (
        packed,
        iou[rows, chosen].float().cpu().numpy(),
        best[:, 0].float().cpu().numpy(),
        chosen.cpu().numpy(),
    )


def decode_objects_steps(
    predictor: Any,
    prompts: Sequence[ObjectPrompt],
    multimask_output: bool = True,
    batch_size: int = 32,
    max_objects: int = MAX_OBJECTS,
) -> Generator[DecodeProgress, None, DecodedObjects]:
    """:func:`decode_objects` as a generator: yields after each batch (closing it stops)."""
    if not hasattr(predictor, "_decoder_constants"):
        # Not a SamPredictor (a stand-in, a wrapper): the reference path, one call per object.
        return (yield from _one_at_a_time(predictor, prompts, multimask_output, max_objects))
    if predictor.original_size is None:
        raise RuntimeError("An image must be set with .set_image(...) before decoding objects.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    check_object_count(len(prompts), max_objects)
    n = len(prompts)
    shape = (int(predictor.original_size[0]), int(predictor.original_size[1]))
    masks: list[PackedMask | None] = [None] * n
    scores = np.zeros(n, dtype=np.float32)
    low_res = np.zeros((n, 256, 256), dtype=np.float32)
    chosen = np.zeros(n, dtype=np.int64)
    # Prompts of one signature (points, box, mask) form batches; order is restored on output.
    by_signature: dict[tuple, list[int]] = {}
    for index, prompt in enumerate(prompts):
        if prompt.point_coords is None and prompt.box is None:
            raise ValueError(f"Object {index} has neither a point nor a box to prompt it.")
        by_signature.setdefault(prompt.signature(), []).append(index)
    done = 0
    for indices in by_signature.values():
        for start in range(0, len(indices), batch_size):
            part = indices[start : start + batch_size]
            lr, io = _decode_low_res(predictor, [prompts[i] for i in part], multimask_output)
            packed, best_iou, best_lr, best = _upscale_chosen(predictor, lr, io)
            for k, i in enumerate(part):
                masks[i] = packed[k]
            scores[part], low_res[part], chosen[part] = best_iou, best_lr, best
            done += len(part)
            yield DecodeProgress(done, n)
    return DecodedObjects(masks, scores, low_res, chosen, shape)  # type: ignore[arg-type]


def _one_at_a_time(
    predictor: Any, prompts: Sequence[ObjectPrompt], multimask_output: bool, max_objects: int
) -> Generator[DecodeProgress, None, DecodedObjects]:
    """Each object through ``predictor.predict`` alone, the best-scored candidate kept."""
    check_object_count(len(prompts), max_objects)
    masks, scores, low_res, chosen = [], [], [], []
    shape = (0, 0)
    for done, prompt in enumerate(prompts, start=1):
        m, s, lr = predictor.predict(**prompt.predict_kwargs(), multimask_output=multimask_output)
        best = int(np.argmax(s))
        shape = tuple(int(v) for v in m.shape[-2:])
        masks.append(PackedMask.from_mask(np.asarray(m[best], dtype=bool)))
        scores.append(float(s[best]))
        low_res.append(np.asarray(lr[best], dtype=np.float32))
        chosen.append(best)
        yield DecodeProgress(done, len(prompts))
    return DecodedObjects(
        masks,
        np.asarray(scores, dtype=np.float32),
        np.asarray(low_res, dtype=np.float32).reshape(-1, 256, 256),
        np.asarray(chosen, dtype=np.int64),
        shape,  # type: ignore[arg-type]
    )


def decode_objects(
    predictor: Any,
    prompts: Sequence[ObjectPrompt],
    multimask_output: bool = True,
    batch_size: int = 32,
    max_objects: int = MAX_OBJECTS,
) -> DecodedObjects:
    """Decode many objects on the predictor's current image, in batches.

    Arguments:
      predictor: a ``SamPredictor`` holding the image (``set_image`` or an embedding).
      prompts: one :class:`ObjectPrompt` per object.
      multimask_output: each object takes the best-scored of 3 candidates (True) or the single
        mask (False), as ``SamPredictor.predict`` with the same flag followed by ``argmax``.
      batch_size: objects decoded per batch (memory for their logits; not the result).
      max_objects: refuse more objects than this (ValueError), before decoding.

    Returns:
      :class:`DecodedObjects`, in prompt order.
    """
    steps = decode_objects_steps(predictor, prompts, multimask_output, batch_size, max_objects)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def resolve_overlaps(
    masks: Sequence[PackedMask | np.ndarray], scores: Sequence[float], shape: tuple[int, int]
) -> np.ndarray:
    """(H, W) int32 labels, object i = i + 1: where masks overlap, the higher predicted IoU
    keeps the pixel, and on equal scores the earlier object."""
    labels = np.zeros(shape, dtype=np.int32)
    scores = np.asarray(scores, dtype=np.float64)
    if len(masks) != len(scores):
        raise ValueError(f"{len(masks)} masks but {len(scores)} scores.")
    # Painted from the lowest score up (later indices first among equals): the last painter of
    # a pixel is the winner the rule names.
    order = np.lexsort((-np.arange(len(scores)), scores))
    for index in order.tolist():
        mask = masks[index]
        if isinstance(mask, PackedMask):
            if mask.area == 0:
                continue
            view = labels[mask.slices()]
            view[mask.crop()] = index + 1
        else:
            labels[np.asarray(mask, dtype=bool)] = index + 1
    return labels


def prompts_from_objects(objects: Sequence[dict], each_point: bool = False) -> list[ObjectPrompt]:
    """Object dicts ({"points", "labels", "box"}, the command line's) as prompts; with
    ``each_point`` an object without a box becomes one object per positive point."""
    prompts: list[ObjectPrompt] = []
    for obj in objects:
        points = obj.get("points") or []
        box = obj.get("box")
        if each_point and box is None:
            prompts += each_point_prompts(np.asarray(points, float).reshape(-1, 2), obj["labels"])
            continue
        coords = np.asarray(points, dtype=np.float64).reshape(-1, 2) if points else None
        prompts.append(
            ObjectPrompt(
                point_coords=coords,
                point_labels=None if coords is None else np.asarray(obj["labels"], np.int64),
                box=None if box is None else np.asarray(box, dtype=np.float64),
            )
        )
    return prompts
