"""Turn automatic masks into one instance label image (ids 1..N, no overlaps).

Overlap rule: masks are painted one after another and a later mask covers an earlier one.
With ``order="area"`` (the default) larger masks are painted first, so a small object that lies
on a large one (a nucleus on its cell, a cell on the background "object") stays visible; with
``order="score"`` the mask with the highest predicted IoU is painted last and wins every
overlap; ``order="given"`` paints in list order. Afterwards an object keeps only its visible
pixels, ``min_size`` drops objects with fewer visible pixels, and ids are renumbered 1..N in
painting order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .mask_records import PackedMask, rle_to_mask
from .parameter_checks import checked_whole

ORDERS = ("area", "score", "given")


def _as_packed(record: Any) -> tuple[PackedMask, float]:
    """(packed mask, score) of a record dict, a MaskCandidate or a PackedMask."""
    if isinstance(record, PackedMask):
        return record, 0.0
    mask = getattr(record, "mask", None)
    if isinstance(mask, PackedMask):
        return mask, float(getattr(record, "predicted_iou", 0.0))
    if not isinstance(record, dict) or "segmentation" not in record:
        raise TypeError(
            "records must be segment-anything record dicts (with 'segmentation'), mask "
            f"candidates or packed masks, not {type(record).__name__}."
        )
    seg = record["segmentation"]
    if isinstance(seg, dict):
        if isinstance(seg.get("counts"), str | bytes):
            seg = _decode_coco(seg)
        else:
            seg = rle_to_mask(seg)
    seg = np.asarray(seg)
    if seg.dtype.kind not in "biuf":
        raise ValueError(f"A segmentation must be a boolean (H, W) mask, got dtype {seg.dtype}.")
    seg = seg.astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"A segmentation must be one (H, W) mask, got shape {seg.shape}.")
    return PackedMask.from_mask(seg), float(record.get("predicted_iou", 0.0))


def _decode_coco(rle: dict[str, Any]) -> np.ndarray:
    """A compressed COCO RLE (``counts`` a string) -> (H, W) bool, through pycocotools."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError as exc:
        raise ImportError(
            "Compressed COCO RLE needs pycocotools (pip install pycocotools)."
        ) from exc
    try:
        size = [int(v) for v in rle["size"]]
        if len(size) != 2 or min(size) < 1:
            raise ValueError
        counts = rle["counts"]
        mask = mask_utils.decode({"size": size, "counts": counts})
    except Exception:  # pycocotools' own errors say nothing about which field is wrong
        raise ValueError(
            f"A compressed COCO RLE could not be decoded: 'size' must be [H, W] (got "
            f"{rle.get('size')!r}) and 'counts' a string from pycocotools' encode."
        ) from None
    if mask.shape[:2] != tuple(size) or mask.sum() > size[0] * size[1]:
        raise ValueError(f"A compressed COCO RLE does not decode to its size {size}.")
    return mask.astype(bool)


def masks_to_labels(
    records: Iterable[Any],
    shape: Sequence[int] | None = None,
    min_size: int = 0,
    fill_holes: bool = False,
    order: str = "area",
) -> np.ndarray:
    """Paint masks into a non-overlapping instance label image.

    Arguments:
      records: segment-anything records (any ``output_mode``) from
        :meth:`SamAutomaticMaskGenerator.generate`, or its packed candidates.
      shape: (H, W) of the output, or the image's shape (H, W[, C]): with no records the
        result is an all-zero label image of this shape. Without it the shape comes from the
        records, and an empty list is refused.
      min_size: objects with fewer visible pixels than this are dropped.
      fill_holes: fill each object's enclosed holes (only where no other object is).
      order: the overlap rule (see the module docstring): "area", "score" or "given".

    Returns:
      (H, W) int32 labels, 0 = background, objects 1..N.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}.")
    min_size = checked_whole("min_size", min_size, 0, 2**62)
    items = []
    for index, record in enumerate(records):
        try:
            items.append(_as_packed(record))
        except ValueError as exc:
            raise ValueError(f"records[{index}]: {exc}") from None
    if shape is None:
        if not items:
            raise ValueError(
                "No masks were given: pass shape=image.shape[:2] (H, W) for the empty label image."
            )
        shape = items[0][0].shape
    shape = _checked_shape(shape)
    for packed, _ in items:
        if tuple(packed.shape) != shape:
            raise ValueError(f"A mask has shape {packed.shape}, expected {shape}.")
    if order == "area":
        # Stable sort: equal areas keep their given order.
        items.sort(key=lambda item: -item[0].area)
    elif order == "score":
        items.sort(key=lambda item: item[1])

    labels = np.zeros(shape, dtype=np.int32)
    for index, (packed, _) in enumerate(items, start=1):
        if packed.area == 0:
            continue
        view = labels[packed.slices()]
        view[packed.crop()] = index
    if fill_holes:
        for index, (packed, _) in enumerate(items, start=1):
            rows, cols = packed.slices()
            view = labels[rows, cols]
            filled = ndimage.binary_fill_holes(view == index)
            view[filled & (view == 0)] = index
    return relabel_sequential(labels, min_size)


def _checked_shape(shape: Any) -> tuple[int, int]:
    try:
        values = list(shape)
    except TypeError:
        values = []
    if not 2 <= len(values) <= 3:
        raise ValueError(f"shape must be (H, W) or an image's shape (H, W[, C]), got {shape!r}.")
    height = checked_whole("shape[0]", values[0], 1, 2**31 - 1)
    width = checked_whole("shape[1]", values[1], 1, 2**31 - 1)
    return height, width


def relabel_sequential(labels: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Renumber the ids of ``labels`` 1..N in increasing order of the old ids, dropping objects
    with fewer than ``min_size`` pixels (they become 0). Returns int32."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    mapping = np.zeros(sizes.size, dtype=np.int32)
    mapping[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return mapping[labels]
