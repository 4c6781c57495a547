"""Building blocks of automatic mask generation: point grids, crops, scores, boxes, RLE.

Everything follows segment-anything's conventions, because its records are the interface:
boxes are XYXY with the *inclusive* last column/row (a record's XYWH box is ``[x0, y0, x1 - x0,
y1 - y0]``), points are (x, y) = (column, row), and an uncompressed RLE is COCO's: run lengths
over the column-major flattening of an (H, W) mask, starting with a run of zeros.

:class:`PackedMask` keeps a mask as the bits of its bounding box, so thousands of candidates on
a large image cost little memory (at most H * W / 8 bytes each, usually far less).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch
from scipy import ndimage

# 8-connectivity, as segment-anything's OpenCV call uses by default.
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
CROP_EDGE_TOLERANCE = 20  # px: a box this close to an inner crop edge is a cut-off object


# ------------------------------------------------------------------------ prompts and crops
def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n * n, 2) points (x, y) in [0, 1] at the centres of an n x n grid, x varying fastest."""
    half_step = 1.0 / (2 * n_per_side)
    one_side = np.linspace(half_step, 1.0 - half_step, n_per_side)
    xs = np.tile(one_side[None, :], (n_per_side, 1))
    ys = np.tile(one_side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer 0..n_layers; layer k has ``int(n / downscale**k)`` points a side."""
    return [build_point_grid(int(n_per_side / (downscale**k))) for k in range(n_layers + 1)]


MIN_CROP_SIDE = 2  # pixels: the smallest image the generator segments


def generate_crop_boxes(
    image_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crops of the image: the whole image, then 2^k x 2^k overlapping crops for k = 1..n_layers.

    Arguments:
      image_size: (H, W).
      n_layers: number of crop layers below the whole image.
      overlap_ratio: overlap between neighbouring crops as a fraction of the short side (at
        layer 1; it halves with each layer).

    Returns:
      XYXY crop boxes (exclusive x1, y1) and the layer index of each. Crops narrower than
      :data:`MIN_CROP_SIDE` pixels (on images smaller than the layer's grid of crops) are left
      out; on larger images the crops are segment-anything's.
    """
    height, width = image_size
    short_side = min(height, width)
    boxes, layers = [[0, 0, width, height]], [0]

    def crop_length(full: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + full) / n_crops))

    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = crop_length(width, per_side, overlap)
        crop_h = crop_length(height, per_side, overlap)
        starts_x = [int((crop_w - overlap) * i) for i in range(per_side)]
        starts_y = [int((crop_h - overlap) * i) for i in range(per_side)]
        # x outer, y inner: the order segment-anything lists its crops in.
        for x0, y0 in product(starts_x, starts_y):
            box = [x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)]
            # On an image with fewer pixels than crops a side, crops start at or past the edge
            # (empty) or are a pixel thin: left out, as images thinner than 2 pixels are.
            if box[2] - box[0] >= MIN_CROP_SIDE and box[3] - box[1] >= MIN_CROP_SIDE:
                boxes.append(box)
                layers.append(layer)
    return boxes, layers


# ------------------------------------------------------------------------ scores and boxes
def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at ``threshold + offset`` and ``threshold - offset``.

    Arguments:
      logits: (N, H, W) mask logits.

    Returns:
      (N,) float32; NaN where even the looser mask is empty.
    """
    inner = _count_above(logits, threshold + offset)
    outer = _count_above(logits, threshold - offset)
    return inner / outer


def _count_above(logits: torch.Tensor, value: float) -> torch.Tensor:
    """(N,) int32 counts of ``logits > value`` per mask. Rows are summed in int16 first where
    they are short enough (30% faster than one int32 sum over both axes on a 2-core CPU)."""
    above = logits > value
    if logits.shape[-1] < 2**15:
        return above.sum(dim=-1, dtype=torch.int16).sum(dim=-1, dtype=torch.int32)
    return above.sum(dim=(-1, -2), dtype=torch.int32)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (inclusive x1, y1) of (N, H, W) bool masks; (0, 0, 0, 0) if empty.

    Returns:
      (N, 4) int64.
    """
    n, height, width = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=2)  # (N, H)
    cols = masks.any(dim=1)  # (N, W)
    return torch.stack(
        [_first_true(cols), _first_true(rows), _last_true(cols), _last_true(rows)], dim=1
    ) * (rows.any(dim=1, keepdim=True))


def _first_true(flags: torch.Tensor) -> torch.Tensor:
    # argmax returns the first maximum: the first True (0 for an all-False row).
    return flags.to(torch.uint8).argmax(dim=1).to(torch.int64)


def _last_true(flags: torch.Tensor) -> torch.Tensor:
    length = flags.shape[1]
    return (length - 1 - flags.flip(1).to(torch.uint8).argmax(dim=1)).to(torch.int64)


def boxes_near_crop_edge(
    boxes: torch.Tensor,
    crop_box: list[int],
    image_box: list[int],
    tolerance: float = CROP_EDGE_TOLERANCE,
) -> torch.Tensor:
    """Which boxes touch an edge of the crop that is not also an edge of the image.

    Arguments:
      boxes: (N, 4) XYXY in the crop's frame.
      crop_box, image_box: XYXY (exclusive x1, y1) in the image frame.

    Returns:
      (N,) bool; True for a mask probably cut off by the crop.
    """
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float32, device=boxes.device)
    offset = torch.as_tensor(crop_box[:2] * 2, dtype=boxes.dtype, device=boxes.device)
    boxes = (boxes + offset).to(torch.float32)
    near_crop = torch.isclose(boxes, crop[None], atol=tolerance, rtol=0)
    near_image = torch.isclose(boxes, image[None], atol=tolerance, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def xyxy_to_xywh(box: Any) -> list[int]:
    """[x0, y0, x1, y1] -> [x0, y0, x1 - x0, y1 - y0] (segment-anything's record boxes)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


# ------------------------------------------------------------------------ compact masks
@dataclass
class PackedMask:
    """A boolean mask stored as the packed bits of its bounding box.

    Attributes:
      box: (x0, y0, x1, y1) inclusive, in the frame of an image of ``shape``.
      shape: (H, W) of that image.
      bits: ``np.packbits`` of the (y1 - y0 + 1, x1 - x0 + 1) box contents, row-major.
      area: number of True pixels.
    """

    box: tuple[int, int, int, int]
    shape: tuple[int, int]
    bits: np.ndarray
    area: int

    @classmethod
    def from_crop(
        cls, mask: np.ndarray, box: tuple[int, int, int, int], offset: tuple[int, int],
        shape: tuple[int, int],
    ) -> PackedMask:  # fmt: skip
        """Pack ``mask`` (bool, crop frame) with its tight ``box`` in that frame; ``offset``
        (x, y) moves it into an image of ``shape`` (H, W)."""
        x0, y0, x1, y1 = box
        sub = np.ascontiguousarray(mask[y0 : y1 + 1, x0 : x1 + 1])
        dx, dy = offset
        return cls(
            (x0 + dx, y0 + dy, x1 + dx, y1 + dy), shape, np.packbits(sub, axis=None),
            int(np.count_nonzero(sub)),
        )  # fmt: skip

    @classmethod
    def from_mask(
        cls,
        mask: np.ndarray,
        offset: tuple[int, int] = (0, 0),
        shape: tuple[int, int] | None = None,
    ) -> PackedMask:
        """Pack a full (H, W) bool mask (its box is computed here; an empty mask keeps one
        pixel's box at the origin, as segment-anything's (0, 0, 0, 0)).

        ``offset`` (row, col) and ``shape`` (H, W): ``mask`` is the part of an image of
        ``shape`` starting there, and False everywhere else.
        """
        mask = np.asarray(mask, dtype=bool)
        shape = mask.shape[:2] if shape is None else shape
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return cls((0, 0, 0, 0), shape, np.packbits(np.zeros(1, dtype=bool)), 0)
        box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
        return cls.from_crop(mask, box, (offset[1], offset[0]), shape)

    @property
    def box_shape(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box
        return y1 - y0 + 1, x1 - x0 + 1

    def crop(self) -> np.ndarray:
        """The (h, w) bool contents of the box."""
        h, w = self.box_shape
        return np.unpackbits(self.bits, count=h * w).reshape(h, w).view(bool)

    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the box in the image."""
        x0, y0, x1, y1 = self.box
        return slice(y0, y1 + 1), slice(x0, x1 + 1)

    def to_mask(self) -> np.ndarray:
        """The full (H, W) bool mask."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.slices()] = self.crop()
        return out

    def nbytes(self) -> int:
        return int(self.bits.nbytes)


# ------------------------------------------------------------------------ RLE
def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> uncompressed COCO RLE ``{"size": [H, W], "counts": [...]}``.

    Counts alternate zeros and ones over the column-major (Fortran) order, starting with zeros
    (a leading 0 when the first pixel is set).
    """
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [int(height), int(width)], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return {"size": [int(height), int(width)], "counts": counts}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed COCO RLE -> (H, W) bool.

    Raises:
      ValueError: ``size`` is not two whole numbers >= 1, or ``counts`` are not whole numbers
        >= 0 that add up to H * W.
    """
    try:
        height, width = (int(v) for v in rle["size"])
        if [height, width] != list(rle["size"]) or min(height, width) < 1:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"An RLE's 'size' must be [H, W], two whole numbers >= 1, got {rle.get('size')!r}."
        ) from None
    try:
        raw = np.asarray(rle["counts"])
        counts = raw.astype(np.int64)
        if raw.ndim != 1 or raw.dtype.kind not in "iuf" or (counts != raw).any():
            raise ValueError
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ValueError(
            "An RLE's 'counts' must be a list of whole numbers (run lengths); compressed COCO "
            "strings need pycocotools."
        ) from None
    if (counts < 0).any() or int(counts.sum()) != height * width:
        raise ValueError(
            f"An RLE's counts must be >= 0 and add up to H * W = {height * width} pixels for "
            f"size {[height, width]}, got a sum of {int(counts.sum())}."
        )
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T.copy()


def rle_area(rle: dict[str, Any]) -> int:
    """Number of set pixels of an uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def coco_encode_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO's compressed RLE (``counts`` a str), via pycocotools."""
    from pycocotools import mask as mask_utils

    height, width = rle["size"]
    encoded = mask_utils.frPyObjects(rle, height, width)
    encoded["counts"] = encoded["counts"].decode("utf-8")
    return encoded


# ------------------------------------------------------------------------ small regions
def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill small holes (``mode="holes"``) or remove small islands (``mode="islands"``).

    Regions are 8-connected. A hole is a connected component of the background, whether or
    not it touches the image border. When every island is small, the largest one is kept.

    Arguments:
      mask: (H, W) bool.
      area_thresh: regions with fewer pixels than this are small.

    Returns:
      The new mask and whether anything changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}.")
    holes = mode == "holes"
    working = ~mask if holes else mask
    regions, n_regions = ndimage.label(working, structure=EIGHT_CONNECTED)
    sizes = np.bincount(regions.ravel(), minlength=n_regions + 1)[1:]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(regions, small), True
    keep = np.setdiff1d(np.arange(1, n_regions + 1), small)
    if keep.size == 0:
        keep = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(regions, keep), True
