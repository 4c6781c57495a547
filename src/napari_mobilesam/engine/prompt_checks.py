"""Checks of prompt arguments, shared by every entry point that takes prompts.

``SamPredictor.predict``, ``MobileSAM.predict`` and ``segment_stack`` take points, labels, boxes
and mask inputs in slightly different layouts, but each value is checked here, so the same bad
value is refused everywhere, with a message that names the argument and the shape it should have
(rather than numpy's "inhomogeneous shape", or a fractional label silently truncated to 0).
"""

from __future__ import annotations

import reprlib

import numpy as np

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# -1 is SAM's padding label (a point that is ignored), accepted as segment-anything does.
LABEL_VALUES = (-1, 0, 1)


def _is_ragged(value: object) -> bool:
    """Whether nested sequences in ``value`` have different lengths (rows of unequal size)."""
    if hasattr(value, "shape") and str(getattr(value, "dtype", "object")) != "object":
        return False  # an array or tensor of numbers is rectangular by construction
    try:
        items = np.asarray(value, dtype=object)
    except ValueError:  # numpy could not even lay the nesting out
        return True
    return any(isinstance(item, (list, tuple, np.ndarray)) for item in items.reshape(-1))


def as_float_array(value: object, name: str, expected: str) -> np.ndarray:
    """``value`` as a float64 array; refuses ragged nesting, non-numbers, NaN and infinity.

    Arguments:
      value: the argument as the caller gave it (list, tuple, array, tensor).
      name: the argument's name, used in the message.
      expected: the shape it should have, in words, e.g. "(N, 2) (x, y) points".
    """
    if _is_ragged(value):
        raise ValueError(
            f"{name} is ragged (its rows have different lengths): {reprlib.repr(value)}; "
            f"expected {expected}."
        )
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numbers ({expected}), got {reprlib.repr(value)}."
        ) from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; expected {expected}.")
    return arr


def check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Point labels (already numbers) as int64, refusing any value but 1, 0 (and -1, padding).

    Fractional values are refused rather than truncated (0.5 would otherwise become 0, a
    background point).
    """
    if not np.isin(labels, LABEL_VALUES).all():
        wrong = np.unique(labels[~np.isin(labels, LABEL_VALUES)]).tolist()[:5]
        raise ValueError(f"{name} must be 1 (foreground) or 0 (background), got {wrong}.")
    return labels.astype(np.int64)


def as_mask_input(value: object, name: str = "mask_input") -> np.ndarray:
    """A (1, 256, 256) low-res logits array as float32, checked like points and boxes are.

    NaN or infinite logits (or values beyond float32's range, which become infinite) would give
    NaN scores and an empty mask without any error.
    """
    arr = as_float_array(value, name, "(1, 256, 256) low-res logits from an earlier prediction")
    if arr.shape != (1, 256, 256):
        raise ValueError(f"{name} must be (1, 256, 256) low-res logits, got {arr.shape}.")
    if arr.size and np.abs(arr).max() > _FLOAT32_MAX:
        raise ValueError(f"{name} has values beyond float32's range; pass logits as returned.")
    return arr.astype(np.float32)
