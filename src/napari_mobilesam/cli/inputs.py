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

__all__ = ["discover", "duplicate_stems", "napari_contrast_limits", "parse_planes"]


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


def parse_planes(text: str | None, n_planes: int) -> range:
    """``--planes a:b`` (Python slice of the first axis, either end optional) as a range."""
    if text is None:
        return range(n_planes)
    parts = text.split(":")
    try:
        if len(parts) == 1:
            start = int(parts[0])
            return range(n_planes)[start : start + 1] if start >= 0 else range(0)
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0] else None
        stop = int(parts[1]) if parts[1] else None
    except ValueError as exc:
        raise InputError(f"--planes {text!r}: use a:b, a: or :b (planes a to b - 1)") from exc
    return range(n_planes)[start:stop]
