"""Helpers of the command-line tests (imported by name: tests/cli is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def run_cli(argv: list[str]) -> int:
    """The command line in this process (``--quiet``: no progress bar in the test log)."""
    from napari_mobilesam.cli import main

    return main([*argv, "--quiet"]) if argv[0] not in ("weights", "export") else main(argv)


def files_under(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of every file below ``folder``."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def blob_image(seed: int, shape: tuple[int, int] = (64, 64), dtype=np.uint16) -> np.ndarray:
    """A dark image with one bright rectangle and some noise (distinct per seed)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 200, shape).astype(dtype)
    top, left = 8 + seed % 16, 10 + (3 * seed) % 20
    image[top : top + 24, left : left + 20] += np.asarray(3000 if dtype != np.uint8 else 50, dtype)
    return image
