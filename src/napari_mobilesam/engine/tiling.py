"""Tiles with a halo for automatic segmentation of large images, and stitching across them.

The model sees every image at 1024 pixels on its longest side, so on a 4000 x 3000 field an
object of 10 pixels shrinks to 2-3 and is lost. Tiling runs the generator on each tile at its
own resolution (one embedding per tile) and merges the results:

1. The image is cut into a grid of *cores* of ``tile_shape``; each tile the model sees is its
   core grown by ``halo`` on every side (clipped to the image).
2. A mask that touches the tile's border inside the image is cut off by the tile: dropped (the
   neighbouring tile sees that object whole, if the halo is at least the object's radius).
3. A mask belongs to the tile whose core holds the centre of its bounding box; the others
   drop it. So an object across a core border comes from one tile only, whole: no seam.
4. Masks of neighbouring tiles that still cover the same object (their box centres fall on
   either side of a border) are merged by :func:`deduplicate`: of two masks with mask IoU
   above ``dedup_iou``, the one with the higher predicted IoU stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .mask_records import PackedMask
from .parameter_checks import checked_whole


@dataclass(frozen=True)
class Tile:
    """One tile: ``core`` and ``outer`` as (y0, x0, y1, x1), exclusive ends, image frame."""

    index: int
    core: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]

    @property
    def outer_slices(self) -> tuple[slice, slice]:
        y0, x0, y1, x1 = self.outer
        return slice(y0, y1), slice(x0, x1)


# Cores are at least this many pixels a side (the smallest tile_shape); a remainder thinner than
# that at the bottom or right edge joins the core before it, so no tile is a sliver.
MIN_TILE = 16
# More tiles than this would take days (one embedding each): refused with a message.
MAX_TILES = 65536


def _pair(value: int | Sequence[int], name: str, low: int) -> tuple[int, int]:
    values = (value, value) if np.ndim(value) == 0 else value
    hint = f"{name} must be one whole number >= {low} or (rows, cols), got {value!r}."
    try:
        values = list(values)
    except TypeError:
        raise ValueError(hint) from None
    if len(values) != 2:
        raise ValueError(hint)
    try:
        rows = checked_whole(f"{name}[0]", values[0], low, 2**62)
        cols = checked_whole(f"{name}[1]", values[1], low, 2**62)
    except ValueError:
        raise ValueError(hint) from None
    return rows, cols


def _starts(length: int, step: int) -> list[int]:
    """Core starts along one axis; a last core thinner than MIN_TILE joins the one before."""
    starts = list(range(0, length, step))
    if len(starts) > 1 and length - starts[-1] < MIN_TILE:
        starts.pop()
    return starts


def make_tiles(
    shape: Sequence[int], tile_shape: int | Sequence[int], halo: int | Sequence[int]
) -> list[Tile]:
    """Tiles covering an image of ``shape`` (H, W), row by row.

    Arguments:
      tile_shape: (rows, cols) of a core (or one number for square tiles), >= 16 each. The last
        core of a row or column also takes a remainder thinner than 16 pixels.
      halo: (rows, cols) added on each side of a core (or one number), >= 0.

    Raises:
      ValueError: a tile_shape or halo that is not whole numbers in range, or more than
        :data:`MAX_TILES` tiles.
    """
    th, tw = _pair(tile_shape, "tile_shape", MIN_TILE)
    hy, hx = _pair(halo, "halo", 0)
    height, width = int(shape[0]), int(shape[1])
    rows, cols = _starts(height, th), _starts(width, tw)
    if len(rows) * len(cols) > MAX_TILES:
        raise ValueError(
            f"tile_shape {(th, tw)} cuts the {height} x {width} image into "
            f"{len(rows) * len(cols)} tiles (at most {MAX_TILES}); use larger tiles."
        )
    tiles = []
    for i, y0 in enumerate(rows):
        for j, x0 in enumerate(cols):
            y1 = height if i == len(rows) - 1 else y0 + th
            x1 = width if j == len(cols) - 1 else x0 + tw
            outer = (max(0, y0 - hy), max(0, x0 - hx), min(height, y1 + hy), min(width, x1 + hx))
            tiles.append(Tile(len(tiles), (y0, x0, y1, x1), outer))
    return tiles


def keep_for_tile(mask: PackedMask, tile: Tile, image_shape: Sequence[int]) -> PackedMask | None:
    """``mask`` (in the tile's frame) moved into the image frame if this tile owns it, else None
    (cut off by the tile's inner border, or its box centre lies in another tile's core)."""
    oy0, ox0, oy1, ox1 = tile.outer
    height, width = int(image_shape[0]), int(image_shape[1])
    bx0, by0, bx1, by1 = mask.box
    if mask.area == 0:
        return None
    touches_inner_border = (
        (bx0 == 0 and ox0 > 0)
        or (by0 == 0 and oy0 > 0)
        or (bx1 == ox1 - ox0 - 1 and ox1 < width)
        or (by1 == oy1 - oy0 - 1 and oy1 < height)
    )
    if touches_inner_border:
        return None
    cy = oy0 + (by0 + by1) / 2
    cx = ox0 + (bx0 + bx1) / 2
    cy0, cx0, cy1, cx1 = tile.core
    # Cores are half-open and tile the image, so exactly one of them holds any centre.
    if not (cy0 <= cy < cy1 and cx0 <= cx < cx1):
        return None
    return replace(
        mask,
        box=(bx0 + ox0, by0 + oy0, bx1 + ox0, by1 + oy0),
        shape=(height, width),
    )


def deduplicate(
    masks: list[PackedMask], scores: Sequence[float], dedup_iou: float = 0.5
) -> list[int]:
    """Indices of the masks to keep, best score first: a mask whose mask IoU with an already
    kept one exceeds ``dedup_iou`` is dropped. Only masks with overlapping boxes are compared."""
    if not masks:
        return []
    boxes = np.array([m.box for m in masks], dtype=np.int64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list[int] = []
    for i in order.tolist():
        if kept:
            k = np.asarray(kept)
            overlap = (
                (boxes[k, 0] <= boxes[i, 2])
                & (boxes[i, 0] <= boxes[k, 2])
                & (boxes[k, 1] <= boxes[i, 3])
                & (boxes[i, 1] <= boxes[k, 3])
            )
            if any(mask_iou(masks[i], masks[j]) > dedup_iou for j in k[overlap].tolist()):
                continue
        kept.append(i)
    return kept


def mask_iou(a: PackedMask, b: PackedMask) -> float:
    """Pixel IoU of two packed masks in the same frame (computed on the union of their boxes)."""
    x0, y0 = min(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    x1, y1 = max(a.box[2], b.box[2]), max(a.box[3], b.box[3])
    canvas = np.zeros((2, y1 - y0 + 1, x1 - x0 + 1), dtype=bool)
    for layer, m in enumerate((a, b)):
        mx0, my0, mx1, my1 = m.box
        canvas[layer, my0 - y0 : my1 - y0 + 1, mx0 - x0 : mx1 - x0 + 1] = m.crop()
    inter = np.count_nonzero(canvas[0] & canvas[1])
    union = a.area + b.area - inter
    return inter / union if union else 0.0
