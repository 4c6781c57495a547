"""Turn any 2D image (grayscale, RGB(A), 16-bit, float, boolean) into the uint8 RGB SAM expects.

The rule, in order:

1. Channels: (H, W) and (H, W, 1) are grayscale and are copied into R, G and B. With
   ``rgb=True`` (or ``rgb=None`` and a last axis of 3 or 4 on a 3D array) the last axis is colour:
   RGB is kept, RGBA drops alpha, 2 channels become R and G with B = 0. Colour is RGB, never BGR.
2. Intensities: ``bool`` becomes 0/255. ``uint8`` without ``contrast_limits`` is used as is.
   Anything else is mapped linearly so that ``contrast_limits`` (lo, hi) become 0 and 255 and
   values outside are clipped. Without ``contrast_limits`` the limits are the 0.1 and 99.9
   percentiles of the finite values (robust to hot pixels), one pair for all channels.
3. NaN and infinite values become 0. A constant image (hi <= lo) becomes all 0.
"""

from __future__ import annotations

import numpy as np

# Percentiles are estimated from at most this many pixels, so huge planes stay cheap.
_PERCENTILE_SAMPLE = 1 << 20
ROBUST_PERCENTILES = (0.1, 99.9)


def _as_channels_last(image: np.ndarray, rgb: bool | None) -> np.ndarray:
    if image.ndim == 2:
        return image[..., None]
    if image.ndim == 3:
        if rgb is None:
            rgb = image.shape[-1] in (1, 3, 4)
        if rgb or image.shape[-1] == 1:
            if image.shape[-1] > 4:
                raise ValueError(
                    f"A colour image needs 1 to 4 channels on its last axis, got {image.shape}."
                )
            return image
    raise ValueError(
        f"Expected a 2D image (H, W) or (H, W, C) with C <= 4, got shape {image.shape}. "
        "Pick one plane (and one channel set) of a larger array first."
    )


def robust_limits(image: np.ndarray) -> tuple[float, float]:
    """The 0.1 and 99.9 percentiles of the finite values (0, 0 if there are none)."""
    flat = image.reshape(-1)
    step = max(1, flat.size // _PERCENTILE_SAMPLE)
    sample = flat[::step].astype(np.float32, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(sample, ROBUST_PERCENTILES)
    return float(lo), float(hi)


def to_uint8_rgb(
    image: np.ndarray,
    contrast_limits: tuple[float, float] | None = None,
    rgb: bool | None = None,
) -> np.ndarray:
    """Convert one 2D plane to (H, W, 3) uint8 RGB by the rule in this module's docstring.

    Arguments:
      image: (H, W), (H, W, 1), or (H, W, C) with C in 2..4 when ``rgb`` is true.
      contrast_limits: (lo, hi) mapped to (0, 255), e.g. a napari layer's contrast limits.
      rgb: whether the last axis is colour; None guesses from the shape.
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError(f"The image is empty (shape {image.shape}); nothing to segment.")
    if image.dtype.kind not in "biuf":
        raise ValueError(f"Unsupported image dtype {image.dtype}; use a numeric or bool image.")
    image = _as_channels_last(image, rgb)

    if image.dtype == np.bool_:
        out = image.astype(np.uint8) * np.uint8(255)
    elif image.dtype == np.uint8 and contrast_limits is None:
        out = image
    else:
        lo, hi = (
            robust_limits(image)
            if contrast_limits is None
            else (float(contrast_limits[0]), float(contrast_limits[1]))
        )
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            out = np.zeros(image.shape, dtype=np.uint8)
        else:
            scaled = (image.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
            scaled = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
            out = np.clip(scaled + 0.5, 0, 255).astype(np.uint8)

    channels = out.shape[-1]
    if channels == 1:
        out = np.repeat(out, 3, axis=-1)
    elif channels == 2:
        out = np.concatenate([out, np.zeros_like(out[..., :1])], axis=-1)
    elif channels == 4:
        out = out[..., :3]
    return np.ascontiguousarray(out)
