"""Binary masks as SAM mask prompts: (1, 256, 256) logits in the padded model frame.

SAM's mask prompt lives in the 1024 x 1024 model frame, 4 x 4 model pixels per low-res pixel.
The binary mask is resized bilinearly (``align_corners=False``) to the image's size in that
frame (h', w') = the longest side scaled to 1024, the padding to 1024 x 1024 is filled with 0.5,
and each 4 x 4 block is averaged: the fraction ``f`` of the low-res pixel inside the mask. The
logit is ``log(f / (1 - f))`` with ``f`` clipped to [1e-3, 1 - 1e-3], so inside is +6.9, outside
-6.9, an edge pixel in between, and the padding 0 (neither). Upscaled the way SAM upscales its
own logits, this map gives back the mask up to its edge pixels.

Only a window around each mask is computed: outside it the resized mask is exactly 0 (a sum of
zero products), so its fractions are those of an empty mask, which are computed once. The
resize and the block sums are written here with elementwise products and sums in a fixed
order, so every value is the same wherever its window lies: a mask's logits do not depend on
the size of the window (and a label of 30 pixels costs a 30-pixel window, not a 1024 x 1024
resize). The resize is PyTorch's bilinear rule; its rounding may differ from
``F.interpolate``'s in the last bits (the fractions are tested within 1e-6).
"""

from __future__ import annotations

import functools

import numpy as np

LOGIT_EPS = 1e-3  # fractions are clipped to [eps, 1 - eps]: logits within +-6.9
LOW_RES = 256  # SAM's mask prompt size
BLOCK = 4  # model pixels per low-res pixel, per side
FRAME = LOW_RES * BLOCK
PAD_FRACTION = 0.5  # the padding of the model frame is neither object nor background (logit 0)


def mask_to_logits(masks: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """SAM mask prompts from binary masks (see the module docstring for the rule).

    Arguments:
      masks: (B, H, W) bool masks in image pixels.
      input_size: (h', w') of the image in the model frame (``predictor.input_size``).

    Returns:
      (B, 1, 256, 256) float32 logits.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got shape {masks.shape}.")
    out = np.empty((len(masks), 1, LOW_RES, LOW_RES), dtype=np.float32)
    for k, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = None if rows.size == 0 else (rows[0], rows[-1], cols[0], cols[-1])
        out[k, 0] = label_logits(mask, True, box, input_size)
    return out


def label_logits(
    labels: np.ndarray,
    label: int | bool,
    box: tuple[int, int, int, int] | None,
    input_size: tuple[int, int],
) -> np.ndarray:
    """The (256, 256) float32 logits of the mask ``labels == label``.

    Arguments:
      labels: (H, W) label image (or a bool mask with ``label=True``).
      box: (first row, last row, first col, last col) of the label's pixels, or None if it
        has none.
      input_size: (h', w') of the image in the model frame.
    """
    shape = (int(labels.shape[0]), int(labels.shape[1]))
    size = (int(input_size[0]), int(input_size[1]))
    fraction = _empty_fraction(size).copy()
    if box is not None:
        (y_lo, y_hi, ys), (x_lo, x_hi, xs) = (
            _window(int(first), int(last), n_in, n_out)
            for first, last, n_in, n_out in zip(box[::2], box[1::2], shape, size, strict=True)
        )
        # The image pixels the window's resize reads, and the resize there.
        src_rows = slice(int(ys[0].min()), int(ys[1].max()) + 1)
        src_cols = slice(int(xs[0].min()), int(xs[1].max()) + 1)
        sub = (labels[src_rows, src_cols] == label).astype(np.float32)
        resized = _resize(sub, ys, xs, src_rows.start, src_cols.start)
        window = np.full((y_hi - y_lo, x_hi - x_lo), PAD_FRACTION, dtype=np.float32)
        window[: resized.shape[0], : resized.shape[1]] = resized
        fraction[y_lo // BLOCK : y_hi // BLOCK, x_lo // BLOCK : x_hi // BLOCK] = _block_mean(window)
    fraction = np.clip(fraction, np.float32(LOGIT_EPS), np.float32(1.0 - LOGIT_EPS))
    return np.log(fraction / (np.float32(1.0) - fraction)).astype(np.float32)


Axis = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=16)
def _axis(n_in: int, n_out: int) -> Axis:
    """Bilinear sources of each of ``n_out`` outputs along one axis (align_corners=False):
    (i0, i1, w0, w1), the two source indices and their float32 weights."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, np.float32(1.0) - w1, w1


def _window(first: int, last: int, n_in: int, n_out: int) -> tuple[int, int, Axis]:
    """Along one axis: the block-aligned window [lo, hi) of the model frame whose resize reads
    image pixels ``first..last``, and the sources of its outputs inside the image (< n_out)."""
    i0, i1, w0, w1 = _axis(n_in, n_out)
    lo = int(np.searchsorted(i1, first, side="left"))  # first output reading >= first
    hi = int(np.searchsorted(i0, last, side="right"))  # outputs before hi read <= last
    lo, hi = lo // BLOCK * BLOCK, min(-(-hi // BLOCK) * BLOCK, FRAME)
    inside = slice(lo, min(hi, n_out))
    return lo, hi, (i0[inside], i1[inside], w0[inside], w1[inside])


def _resize(sub: np.ndarray, ys: Axis, xs: Axis, row0: int, col0: int) -> np.ndarray:
    """Bilinear resize of ``sub`` (image pixels from (row0, col0)) at the given outputs:
    columns first, then rows, each output a fixed sum of two products."""
    yi0, yi1, yw0, yw1 = ys
    xi0, xi1, xw0, xw1 = xs
    across = xw0 * sub[:, xi0 - col0] + xw1 * sub[:, xi1 - col0]
    return yw0[:, None] * across[yi0 - row0] + yw1[:, None] * across[yi1 - row0]


def _block_mean(frame: np.ndarray) -> np.ndarray:
    """The mean of each 4 x 4 block, its 16 values summed in a fixed order."""
    r, c = frame.shape[0] // BLOCK, frame.shape[1] // BLOCK
    blocks = frame.reshape(r, BLOCK, c, BLOCK)
    total = np.zeros((r, c), dtype=np.float32)
    for i in range(BLOCK):
        for j in range(BLOCK):
            total += blocks[:, i, :, j]
    return total / np.float32(BLOCK * BLOCK)


@functools.lru_cache(maxsize=8)
def _empty_fraction(input_size: tuple[int, int]) -> np.ndarray:
    """(256, 256) fractions of an empty mask: 0 inside the image, 0.5 in the padding, the
    blocks across the image's edge in between."""
    frame = np.full((FRAME, FRAME), PAD_FRACTION, dtype=np.float32)
    frame[: input_size[0], : input_size[1]] = 0.0
    fraction = _block_mean(frame)
    fraction.setflags(write=False)
    return fraction
