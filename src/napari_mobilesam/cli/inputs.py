"""Finding the inputs of a batch run, and the contrast limits napari would give them.

An INPUT is a file, a folder (its image files and ``*.zarr`` stores, not recursive), a glob
pattern, or a zarr / OME-Zarr array (``path.zarr`` or ``path.zarr/0``).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

from napari_mobilesam.batch.files import (
    IMAGE_SUFFIXES,
    ImageSource,
    InputError,
    napari_contrast_limits,
    open_source,
)

__all__ = [
    "PlanesError",
    "discover",
    "duplicate_stems",
    "napari_contrast_limits",
    "parse_planes",
]


@dataclass
class Discovery:
    """What the INPUT arguments named: usable sources, and the ones refused with a reason."""

    sources: list[ImageSource] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)


def _candidates(text: str) -> list[str]:
    """The paths one INPUT argument stands for (a zarr path stands for itself)."""
    path = Path(text)
    if ".zarr" in text.lower():
        return [text]
    if path.is_dir():
        found = [
            p
            for p in sorted(path.iterdir())
            if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            or (p.is_dir() and p.suffix.lower() == ".zarr")
        ]
        if not found:
            raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}, .zarr) in the folder {text}")
        return [str(p) for p in found]
    if glob.has_magic(text):
        found = sorted(glob.glob(text))
        if not found:
            raise InputError(f"nothing matches {text}")
        return found
    return [text]


def discover(inputs: list[str]) -> Discovery:
    """Open every input's header; unreadable ones are refused (reported), the rest go on."""
    result = Discovery()
    seen: set[str] = set()
    for text in inputs:
        try:
            candidates = _candidates(text)
        except InputError as exc:
            result.refused.append((text, str(exc)))
            continue
        for candidate in candidates:
            try:
                source = open_source(candidate)
            except InputError as exc:
                result.refused.append((candidate, str(exc)))
                continue
            if source.name not in seen:
                seen.add(source.name)
                result.sources.append(source)
    return result


def duplicate_stems(sources: list[ImageSource]) -> dict[str, list[str]]:
    """Output base names claimed by more than one input (their outputs would collide)."""
    by_stem: dict[str, list[str]] = {}
    for source in sources:
        by_stem.setdefault(source.stem, []).append(source.name)
    return {stem: names for stem, names in by_stem.items() if len(names) > 1}


class PlanesError(ValueError):
    """A ``--planes`` value that is malformed or reaches outside the stack."""


def parse_planes(text: str | None, n_planes: int) -> range:
    """``--planes a:b`` (planes a to b - 1; either end optional, negative counts from the end)
    or ``--planes a`` (one plane), as a range of plane indices.

    Raises:
      PlanesError: a malformed value, or one that names planes outside ``0 .. n_planes - 1``
        (a range that would silently select fewer or no planes is not a run the user meant).
    """
    if text is None:
        return range(n_planes)
    parts = text.split(":")
    try:
        if len(parts) > 2 or not all(p.strip().lstrip("-").isdigit() for p in parts if p):
            raise ValueError
        bounds = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise PlanesError(
            f"--planes {text!r}: use A:B, A: or :B (planes A to B - 1) or A (one plane)"
        ) from None
    if len(bounds) == 1:
        if bounds[0] is None:
            raise PlanesError(f"--planes {text!r}: use A:B, A: or :B, or A (one plane)")
        bounds = [bounds[0], bounds[0] + 1 if bounds[0] != -1 else None]
    start, stop = bounds
    inside = all(b is None or -n_planes <= b <= n_planes for b in (start, stop))
    chosen = range(n_planes)[start:stop]
    if not inside or not chosen or (start is not None and not -n_planes <= start < n_planes):
        raise PlanesError(
            f"--planes {text!r} selects no plane, or planes outside the stack of {n_planes} "
            f"planes (give planes from 0 to {n_planes - 1}, e.g. 0:{n_planes})"
        )
    return chosen
