"""Checks of numeric parameters where they enter the API: a ValueError that names the parameter
and the accepted range, instead of NaN silently switching a filter off, a huge value that hangs
or allocates terabytes, or numpy's text from deep inside."""

from __future__ import annotations

import math
import numbers
from typing import Any


def _as_float(value: Any) -> float:
    """A real number as a float (NaN for anything else: str, bool, None, arrays, overflow)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan
    try:
        return float(value)
    except (OverflowError, ValueError):
        return math.nan


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def checked_number(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> float:
    """``value`` as a finite float within [low, high] (ends open where asked), else a
    ValueError naming ``name`` and the range; ``hint`` is appended to the message."""
    number = _as_float(value)
    above = low < number if low_open else low <= number
    below = number < high if high_open else number <= high
    if not (math.isfinite(number) and above and below):
        accepted = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(
            f"{name} must be a finite number in {accepted}, got {_shown(value)}."
            + (f" {hint}" if hint else "")
        )
    return number


def checked_whole(name: str, value: Any, low: int, high: int, *, hint: str = "") -> int:
    """``value`` as an int within [low, high] (a whole float such as 4.0 is accepted), else a
    ValueError naming ``name`` and the range."""
    number = _as_float(value)
    if not (math.isfinite(number) and number == int(number) and low <= number <= high):
        raise ValueError(
            f"{name} must be a whole number in [{low}, {high}], got {_shown(value)}."
            + (f" {hint}" if hint else "")
        )
    return int(number)
