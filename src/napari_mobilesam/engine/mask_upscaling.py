"""Boolean masks at the image's size, upscaled only where the logits can be above 0.

SAM's masks are ``postprocess_masks(low_res) > 0``: a bilinear upscaling of the (256, 256)
logits to the 1024 frame, a crop to the resized image and a second bilinear resize to the
user's image. Every upscaled value is a weighted mean of at most 2 x 2 source values with
non-negative weights, so where all of them are <= 0 the result is <= 0 in floating point too
(a sum of non-positive products): the pixel is False without being computed. A nucleus covers a
few hundred of the 1024 x 1024 pixels, so upscaling only the box around the positive logits
does a small part of the work, with the same bits:

- the 4x step maps output row ``y`` to source ``(y + 0.5) / 4 - 0.5``; on a crop that starts at
  low-res row ``r0`` this is the same value minus ``r0``, exactly (all of it is multiples of
  1/8), so a crop's interior equals the full upscaling. Only its outer 2 rows and columns see
  the crop's edge (clamped sources), and they are dropped unless the crop reaches the
  image's edge, where the full upscaling clamps the same way;
- the second resize (images whose longer side is not 1024) runs in full on a canvas holding
  the exact box and 0 elsewhere. The box covers every possibly positive first-step pixel with
  one pixel to spare, so an output pixel either reads the box only (the same value) or reads
  only pixels that are <= 0 in both (False in both).

The threshold must be 0 for that argument (it is SAM's and this model's); other thresholds
take the full path, and so do GPUs, where the full upscaling is one fast call and a box per
mask would stall it. ``tests/engine/test_mask_upscaling.py`` compares both bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

# The low-res logits are a quarter of the model's 1024 input frame per side.
FACTOR = 4
# Masks whose positive logits span more than this share of the low-res frame take the full,
# batched upscaling: cropping saves little there, and one mask at a time costs more.
MAX_BOX_SHARE = 0.25

Crop = tuple[torch.Tensor, tuple[int, int]]
Postprocess = Callable[[torch.Tensor, tuple[int, int], tuple[int, int]], torch.Tensor]


def binary_crops(
    low_res: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    postprocess: Postprocess,
    threshold: float = 0.0,
) -> list[Crop]:
    """``postprocess(low_res) > threshold`` of N masks, each as a crop and its place.

    Arguments:
      low_res: (N, 256, 256) float logits.
      input_size: (h, w) of the image resized for the model (longer side 1024).
      original_size: (H, W) of the user's image.
      postprocess: ``Sam.postprocess_masks``, for the masks that span much of the image.
      threshold: the model's ``mask_threshold``; crops only for 0 (else full masks).

    Returns:
      N pairs (crop (h', w') bool, (row, col) of its first pixel): each (H, W) mask equals
      ``crop`` there and is False everywhere else (an all-False mask: a (0, 0) crop).
    """
    if not _crops_apply(low_res, threshold):
        full = postprocess(low_res[:, None], input_size, original_size)[:, 0] > threshold
        return [(mask, (0, 0)) for mask in full]
    crops, wide = _boxed(low_res, input_size, original_size)
    if wide:
        full = postprocess(low_res[wide][:, None], input_size, original_size)[:, 0] > 0
        for i, mask in zip(wide, full, strict=True):
            crops[i] = (mask, (0, 0))
    return crops  # type: ignore[return-value]


def binary_masks(
    low_res: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    postprocess: Postprocess,
    threshold: float = 0.0,
) -> torch.Tensor:
    """(B, C, 256, 256) logits -> (B, C, H, W) bool: ``postprocess(low_res) > threshold`` bit
    for bit, the masks with a small positive box upscaled only around it (threshold 0, CPU)."""
    if not _crops_apply(low_res, threshold):
        return postprocess(low_res, input_size, original_size) > threshold
    b, c, low_h, low_w = low_res.shape
    flat = low_res.reshape(b * c, low_h, low_w)
    crops, wide = _boxed(flat, input_size, original_size)
    if len(wide) == b * c:
        return postprocess(low_res, input_size, original_size) > 0
    out = torch.zeros((b * c, *original_size), dtype=torch.bool, device=low_res.device)
    if wide:
        out[wide] = postprocess(flat[wide][:, None], input_size, original_size)[:, 0] > 0
    for mask, crop in zip(out, crops, strict=True):
        if crop is not None:
            part, (y, x) = crop
            mask[y : y + part.shape[0], x : x + part.shape[1]] = part
    return out.view(b, c, *original_size)


def _crops_apply(low_res: torch.Tensor, threshold: float) -> bool:
    """The crops are exact for threshold 0 only, and used on a CPU only."""
    return threshold == 0.0 and low_res.device.type == "cpu"


def _boxed(
    low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
) -> tuple[list[Crop | None], list[int]]:
    """The crops of the masks with a small positive box (None for the others) and the
    indices of the others."""
    in_h, in_w = (int(v) for v in input_size)
    low_h, low_w = low_res.shape[-2:]
    # The low-res rows and columns that reach the resized image (as postprocess_masks).
    rows = min(low_h, -(-in_h // FACTOR) + 1)
    cols = min(low_w, -(-in_w // FACTOR) + 1)
    # Row and column maxima: 17x faster than ``any`` over a boolean copy. A NaN maximum
    # counts as a hit, so that rows holding NaN and positive logits keep their positives.
    reached = low_res[:, :rows, :cols]
    row_hits = (~(reached.amax(dim=2) <= 0)).cpu().numpy()  # (N, rows)
    col_hits = (~(reached.amax(dim=1) <= 0)).cpu().numpy()  # (N, cols)
    crops: list[Crop | None] = []
    wide: list[int] = []
    for i, logits in enumerate(low_res):
        box = _span(row_hits[i]) + _span(col_hits[i])
        if not box:
            crops.append((torch.zeros((0, 0), dtype=torch.bool, device=low_res.device), (0, 0)))
        elif (box[1] - box[0] + 1) * (box[3] - box[2] + 1) > MAX_BOX_SHARE * rows * cols:
            crops.append(None)
            wide.append(i)
        else:
            crops.append(_upscale_box(logits, box, (rows, cols), (in_h, in_w), original_size))
    return crops, wide


def _span(hits: np.ndarray) -> tuple[int, ...]:
    """(first, last) index of a True in a 1-d bool array, () when there is none."""
    where = np.flatnonzero(hits)
    return (int(where[0]), int(where[-1])) if where.size else ()


def _upscale_box(
    logits: torch.Tensor,
    box: tuple[int, int, int, int],
    reach: tuple[int, int],
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> Crop:
    """One mask's crop around its positive ``box`` (see the module's docstring)."""
    low_h, low_w = logits.shape
    in_h, in_w = input_size
    y_lo, y_hi, r0, r1 = _exact_span(box[0], box[1], reach[0], low_h, in_h)
    x_lo, x_hi, c0, c1 = _exact_span(box[2], box[3], reach[1], low_w, in_w)
    size = (FACTOR * (r1 - r0), FACTOR * (c1 - c0))
    up = F.interpolate(logits[None, None, r0:r1, c0:c1], size, mode="bilinear", align_corners=False)
    dy, dx = FACTOR * r0, FACTOR * c0
    exact = up[0, 0, y_lo - dy : y_hi - dy, x_lo - dx : x_hi - dx]
    if input_size == tuple(int(v) for v in original_size):
        return exact > 0, (y_lo, x_lo)
    canvas = logits.new_zeros((1, 1, in_h, in_w))
    canvas[0, 0, y_lo:y_hi, x_lo:x_hi] = exact
    full = F.interpolate(canvas, tuple(original_size), mode="bilinear", align_corners=False)
    return full[0, 0] > 0, (0, 0)


def _exact_span(
    first: int, last: int, reach: int, low_size: int, in_size: int
) -> tuple[int, int, int, int]:
    """Along one axis: (lo, hi) output pixels computed exactly from low-res crop [c0, c1).

    ``first``/``last``: the first and last low-res index with a positive logit. Output pixel
    ``y`` reads low-res ``y // 4 - 1 .. y // 4 + 1``, so pixels that can be positive lie in
    ``[4 first - 2, 4 last + 5]``; 2 low-res pixels of margin on each side keep that range
    plus one pixel inside the exact part, whose ends are 2 output pixels in from the crop's
    unless the crop reaches the frame's edge.
    """
    c0, c1 = max(first - 2, 0), min(last + 3, reach)
    lo = 0 if c0 == 0 else FACTOR * c0 + 2
    hi = FACTOR * low_size if c1 == low_size else FACTOR * c1 - 2
    return lo, min(hi, in_size), c0, c1
