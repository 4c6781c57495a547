"""Argument types of the command line: each refuses a bad value where it enters, in one line
that says what is accepted (argparse adds the argument's name), exit status 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

EXIT_USAGE = 2
MAX_POINTS_PER_SIDE = 128  # 16384 prompts per tile: hours on a CPU; more is a typo
MAX_WORKERS = 1024
MAX_TIMEOUT_S = 24 * 3600.0
MIN_TILE = 16  # the smallest side a tile of segment everything may have


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (the argument and what is accepted) and exit status 2.

    Subcommand parsers made by ``add_subparsers`` are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def _fail(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


def _finite_numbers(text: str, count: int, example: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        _fail(f"expected {count} finite numbers like {example}, got {text!r}")
    return values


def contrast_limits(text: str) -> tuple[float, float]:
    """``LO,HI``: finite, LO below HI (the intensities shown as black and white)."""
    low, high = _finite_numbers(text, 2, "100,4000")
    if not low < high:
        _fail(f"LO,HI with LO below HI (the intensities shown black and white), got {text!r}")
    return low, high


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        stripped = text.strip()
        if not stripped.isdigit() or not low <= int(stripped) <= high:
            _fail(f"expected a whole number from {low} to {high}, got {text!r}")
        return int(stripped)

    return parse


def fraction(text: str) -> float:
    """A finite number from 0 to 1 (a threshold on predicted IoU or stability)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        _fail(f"expected a number from 0 to 1, got {text!r}")
    return value


def tile_shape(text: str) -> tuple[int, int]:
    """``H,W``: two whole numbers of at least :data:`MIN_TILE` pixels."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= MIN_TILE for p in parts):
        _fail(f"expected two whole numbers of at least {MIN_TILE} like 1024,1024, got {text!r}")
    return int(parts[0]), int(parts[1])


def seconds(text: str) -> float:
    """A finite number of seconds above 0 (at most a day)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        _fail(f"expected seconds above 0 and at most {MAX_TIMEOUT_S:g}, got {text!r}")
    return value


def scheduler(text: str) -> str:
    """``threads``, ``local:N`` or a dask scheduler's address."""
    from napari_mobilesam.batch.tasks import parse_scheduler

    try:
        parse_scheduler(text)
    except ValueError as exc:
        _fail(str(exc))
    return text
