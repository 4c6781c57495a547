"""Turn any 2D image (grayscale, RGB(A), 16-bit, float, boolean) into the uint8 RGB SAM expects.

The rule, in order:

1. Channels: (H, W) and (H, W, 1) are grayscale and are copied into R, G and B. With
   ``rgb=True`` (or ``rgb=None`` and a last axis of 1 to 4 on a 3D array) the last axis is colour:
   RGB is kept, RGBA drops alpha, 2 channels become R and G with B = 0. Colour is RGB, never BGR.
2. Intensities: ``bool`` becomes 0/255. ``uint8`` without ``contrast_limits`` is used as is.
   Anything else is mapped linearly so that ``contrast_limits`` (lo, hi) become 0 and 255 and
   values outside are clipped. Without ``contrast_limits`` the limits are the 0.1 and 99.9
   percentiles of the finite values (robust to hot pixels), one pair for all channels.
3. NaN and infinite values become 0; limits found from the image ignore them, so one +inf
   pixel does not black out the plane. A constant image, one without finite values, or equal
   limits (hi == lo) become all 0, with a :class:`NoContrastWarning`: the model then sees a
   black image and its masks mean nothing. Given limits that are NaN, infinite or reversed
   (hi < lo) are refused with a ValueError.

Memory: the mapping runs over bands of rows, so no full-size float copy is made; the result is
the full-size uint8 RGB (3 bytes per pixel). Before encoding, planes larger than the encoder
needs are first reduced by :func:`shrink_for_encoder`, which reads them in bands too.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

# Percentiles are estimated from at most this many pixels, so huge planes stay cheap.
_PERCENTILE_SAMPLE = 1 << 20
ROBUST_PERCENTILES = (0.1, 99.9)
# Float work is done this many pixels at a time: temporaries stay a few tens of MiB whatever the
# image size.
_BAND_PIXELS = 1 << 22
# A plane is reduced before encoding only when its longest side is at least this many times the
# encoder's input size; the reduced plane keeps at least twice that size, so the final
# (antialiased) resize still does the last step and smaller planes are encoded exactly as given.
_SHRINK_FROM = 4
_SHRINK_KEEP = 2


class NoContrastWarning(UserWarning):
    """The image maps to all 0 (constant, no finite values, or empty contrast limits)."""


def _as_channels_last(image: np.ndarray, rgb: bool | None) -> np.ndarray:
    if image.ndim == 2:
        return image[..., None]
    if image.ndim == 3:
        if rgb is None:
            rgb = image.shape[-1] <= 4
        if rgb or image.shape[-1] == 1:
            if image.shape[-1] > 4:
                raise ValueError(
                    f"A colour image needs 1 to 4 channels on its last axis, got {image.shape}."
                )
            return image
        if image.shape[-1] <= 4:
            raise ValueError(
                f"Got shape {image.shape} with rgb=False: a 3D array is not one 2D plane. "
                "Pass rgb=True if the last axis holds colour channels, or pick one plane."
            )
    raise ValueError(
        f"Expected a 2D image (H, W) or (H, W, C) with C <= 4, got shape {image.shape}. "
        "Pick one plane (and one channel set) of a larger array first."
    )


# PIL modes whose pixels np.asarray gives as they should be read: grey, RGB(A), 1-bit, 16- and
# 32-bit integers, float. Every other mode is converted first (see image_from_pil).
_PIL_AS_IS = {"1", "L", "RGB", "RGBA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


def image_from_pil(img: Any) -> np.ndarray:
    """A PIL image as the array :func:`to_uint8_rgb` takes, with its pixels' meaning kept.

    - EXIF orientation is applied, so the array looks as viewers show the photo.
    - Palette images ("P", "PA") become their colours, not their palette indices.
    - Grey with alpha ("LA") becomes grey (a 2-channel array would read as red and green).
    - CMYK, YCbCr, LAB, HSV and the other colour modes become RGB.
    - 16-bit ("I;16", big- or little-endian) and 32-bit modes keep their values, in native byte
      order, so the contrast mapping sees the real range.
    """
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode in ("P", "PA"):
        # A transparent palette entry needs RGBA (PIL warns otherwise); alpha is dropped later.
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("LA", "La"):
        img = img.convert("L")
    elif mode not in _PIL_AS_IS:
        img = img.convert("RGB")
    array = np.asarray(img)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def is_pil_image(value: Any) -> bool:
    """Whether ``value`` is a PIL image (without importing PIL)."""
    return type(value).__module__.startswith("PIL.") and hasattr(value, "mode")


def robust_limits(image: np.ndarray) -> tuple[float, float]:
    """The 0.1 and 99.9 percentiles of the finite values (0, 0 if there are none)."""
    flat = image.reshape(-1)
    step = max(1, flat.size // _PERCENTILE_SAMPLE)
    sample = flat[::step].astype(np.float64)  # float32 would overflow for huge float64
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(sample, ROBUST_PERCENTILES)
    return float(lo), float(hi)


def checked_contrast_limits(contrast_limits: Any) -> tuple[float, float]:
    """``contrast_limits`` as two finite floats (lo, hi) with lo <= hi, else a ValueError.

    NaN, infinite or reversed limits would map every pixel to 0 (a black image the model
    segments into nothing), so they are refused rather than run. Equal limits are accepted and
    give the documented all-0 image with a :class:`NoContrastWarning`.
    """
    try:
        lo, hi = (float(v) for v in contrast_limits)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"contrast_limits must be two numbers (lo, hi), got {contrast_limits!r}."
        ) from exc
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(
            f"contrast_limits must be finite numbers (lo, hi), got {(lo, hi)}; leave them out "
            "to use the image's own range of finite values."
        )
    if hi < lo:
        raise ValueError(f"contrast_limits {(lo, hi)} are reversed: give (lo, hi) with lo < hi.")
    return lo, hi


def to_uint8_rgb(
    image: np.ndarray,
    contrast_limits: tuple[float, float] | None = None,
    rgb: bool | None = None,
) -> np.ndarray:
    """Convert one 2D plane to (H, W, 3) uint8 RGB by the rule in this module's docstring.

    Arguments:
      image: (H, W), (H, W, 1), or (H, W, C) with C in 2..4 when ``rgb`` is true.
      contrast_limits: (lo, hi) mapped to (0, 255), e.g. a napari layer's contrast limits.
      rgb: whether the last axis is colour; None guesses from the shape (last axis of 1 to 4).

    Raises:
      ValueError: for an empty image, a non-numeric dtype, a shape that is not one 2D plane,
        or contrast limits that are not two finite numbers in increasing order.
    """
    # A PIL image's array can be palette indices or grey + alpha: read its pixels' meaning.
    image = image_from_pil(image) if is_pil_image(image) else np.asarray(image)
    if image.size == 0:
        raise ValueError(f"The image is empty (shape {image.shape}); nothing to segment.")
    if image.dtype.kind not in "biuf":
        raise ValueError(f"Unsupported image dtype {image.dtype}; use a numeric or bool image.")
    image = shown_channels(_as_channels_last(image, rgb))
    limits = None if contrast_limits is None else checked_contrast_limits(contrast_limits)

    if image.dtype == np.bool_:
        out = image.astype(np.uint8) * np.uint8(255)
    elif image.dtype == np.uint8 and limits is None:
        out = image
    else:
        lo, hi = robust_limits(image) if limits is None else limits
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            reason = (
                "it is constant or has no finite values"
                if limits is None
                else f"its contrast limits {limits} are empty; widen them"
            )
            warnings.warn(
                f"The image has no contrast to map ({reason}): the model sees a black image "
                "and its masks mean nothing.",
                NoContrastWarning,
                stacklevel=2,
            )
            out = np.zeros(image.shape, dtype=np.uint8)
        else:
            out = _map_linear(image, lo, hi)

    channels = out.shape[-1]
    if channels == 1:
        out = np.repeat(out, 3, axis=-1)
    elif channels == 2:
        out = np.concatenate([out, np.zeros_like(out[..., :1])], axis=-1)
    return np.ascontiguousarray(out)


def shown_channels(image: Any) -> Any:
    """A channels-last plane without the channels the model never sees (alpha of RGBA).

    Limits must come from the shown channels only: an opaque alpha of 4095 in a 12-bit RGBA
    image would otherwise set the top limit, and the colours would map to almost black.
    """
    return image[..., :3] if image.ndim == 3 and image.shape[-1] == 4 else image


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _map_linear(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo``..``hi`` to 0..255 (clipped; NaN and inf to 0), a band of rows at a time."""
    out = np.empty(image.shape, dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // max(1, image[0].size))
    # float32 is twice as fast, but values or limits beyond its range (float64 data around
    # 1e39) would become inf and then 0: the brightest pixels black. Those map in float64,
    # halved first so that even hi - lo near float64's maximum stays finite.
    float64_data = image.dtype.kind == "f" and image.dtype.itemsize > 4
    wide = float64_data or max(abs(lo), abs(hi)) > _FLOAT32_MAX
    work, half = (np.float64, 0.5) if wide else (np.float32, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        offset = work(lo * half)
        scale = work(255.0 / (hi * half - lo * half))
        for start in range(0, image.shape[0], rows):
            band = (image[start : start + rows].astype(work) * work(half) - offset) * scale
            np.nan_to_num(band, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            band += work(0.5)
            np.clip(band, 0, 255, out=band)
            out[start : start + rows] = band  # truncates, as astype(np.uint8) does
    return out


def shrink_factor(height: int, width: int, target_length: int = 1024) -> int:
    """The block size :func:`shrink_for_encoder` averages over (1: the plane is kept as is).

    Never so large that the short side falls below 2 pixels (the smallest image that is
    segmented): a 100000 x 2 strip is kept at 2 pixels across (it is small anyway, since its
    short side is below the block size).
    """
    longest, shortest = max(int(height), int(width)), min(int(height), int(width))
    if longest < _SHRINK_FROM * target_length:
        return 1
    # ceil(shortest / k) >= 2 exactly when k < shortest.
    return max(1, min(longest // (_SHRINK_KEEP * target_length), shortest - 1))


def _chunk_rows(image: Any) -> int:
    """Rows per storage chunk of a dask or zarr array (0 for in-memory arrays)."""
    chunks = getattr(image, "chunks", None)
    try:
        first = chunks[0]
        return int(first[0] if isinstance(first, tuple) else first)
    except (TypeError, IndexError, ValueError):
        return 0


def shrink_for_encoder(image: Any, target_length: int = 1024) -> np.ndarray:
    """A plane far larger than the encoder's input, reduced by averaging k x k pixel blocks.

    The encoder sees the plane resized to ``target_length`` on its longest side, so planes of
    ``4 * target_length`` pixels or more are first reduced by an integer factor k to between 2
    and 4 times that size; smaller planes are returned as they are (as numpy). The plane is read
    a band of rows at a time, so a numpy memmap of any size needs about one band (a few tens of
    MiB) plus the reduced plane, never a full-size copy; dask and zarr arrays are read one row
    of storage chunks at a time (each chunk once or twice). Partial blocks at the bottom and
    right edges repeat the edge pixels.

    The reduced plane keeps the meaning of the dtype for :func:`to_uint8_rgb`: integers are
    rounded back to their dtype (uint8 stays "used as is"), ``bool`` becomes uint8 0..255 and
    floats stay float (NaN anywhere in a block makes the block NaN, i.e. 0).

    Arguments:
      image: (H, W) or (H, W, C) with C <= 4, any array-like that can be sliced by rows.
      target_length: the encoder's input size.
    """
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] > 4) or 0 in shape:
        return np.asarray(image)  # not one plane: to_uint8_rgb explains what is wrong
    height, width = shape[:2]
    k = shrink_factor(height, width, target_length)
    if k == 1:
        return np.asarray(image)
    dtype = np.dtype(image.dtype)
    # float32 sums of k * k values are exact for 8- and 16-bit pixels and twice as fast.
    work = np.float32 if dtype.itemsize <= 2 or dtype == np.float32 else np.float64
    if dtype.kind == "b":
        out_dtype, factor = np.dtype(np.uint8), 255.0 / (k * k)
    elif dtype.kind in "iu":
        out_dtype, factor = dtype, 1.0 / (k * k)
    else:
        out_dtype, factor = np.dtype(work), 1.0 / (k * k)
    out = np.empty((-(-height // k), -(-width // k), *shape[2:]), dtype=out_dtype)
    channels = shape[2:]
    band_rows = max(1, _BAND_PIXELS // (width * k)) * k
    read_rows = max(band_rows, -(-_chunk_rows(image) // k) * k)
    with np.errstate(over="ignore", invalid="ignore"):
        for read_start in range(0, height, read_rows):
            pixels = np.asarray(image[read_start : read_start + read_rows])
            for offset in range(0, pixels.shape[0], band_rows):
                band = pixels[offset : offset + band_rows].astype(work)
                pad = ((0, -band.shape[0] % k), (0, -width % k), *(((0, 0),) * len(channels)))
                if pad[0][1] or pad[1][1]:
                    band = np.pad(band, pad, mode="edge")
                rows, cols = band.shape[0] // k, band.shape[1] // k
                # Two one-axis sums are much faster than one reduction over two axes.
                summed = band.reshape(rows, k, cols * k, *channels).sum(axis=1)
                summed = summed.reshape(rows, cols, k, *channels).sum(axis=2) * work(factor)
                if out_dtype.kind in "iu":
                    summed = np.rint(summed)
                first = (read_start + offset) // k
                out[first : first + rows] = summed
    return out
