"""Sample images that work offline: one bundled with scikit-image and one generated here."""

from __future__ import annotations

from typing import Any

import numpy as np

LayerDataTuple = tuple[Any, dict[str, Any], str]


def cell_2d() -> list[LayerDataTuple]:
    """scikit-image's bundled 2D cell micrograph (no download)."""
    from skimage import data

    return [(data.cell(), {"name": "cell"}, "image")]


def make_nuclei_stack(
    shape: tuple[int, int, int] = (24, 128, 128), n_nuclei: int = 6, seed: int = 0
) -> np.ndarray:
    """A uint16 z-stack of bright ellipsoids on a dim noisy background.

    Every nucleus is an ellipsoid, so its cross-section grows and shrinks smoothly from slice to
    slice, as a real nucleus does in a confocal stack.
    """
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    z, y, x = np.meshgrid(
        np.arange(depth), np.arange(height), np.arange(width), indexing="ij", sparse=True
    )
    signal = np.zeros(shape, dtype=np.float64)
    for _ in range(n_nuclei):
        centre = rng.uniform(
            (depth * 0.3, height * 0.2, width * 0.2), (depth * 0.7, height * 0.8, width * 0.8)
        )
        radii = rng.uniform((depth * 0.2, 10.0, 10.0), (depth * 0.35, 20.0, 20.0))
        inside = (
            ((z - centre[0]) / radii[0]) ** 2
            + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2
        )
        brightness = rng.uniform(1500.0, 3000.0)
        # A soft edge (rather than a hard step) looks like a blurred microscope image; the
        # exponent is capped because far from a nucleus the edge term is 0 anyway.
        edge = np.exp(np.minimum((inside - 1.0) * 8.0, 50.0))
        signal = np.maximum(signal, brightness / (1.0 + edge))
    background = 300.0 + rng.normal(0.0, 60.0, size=shape)
    return np.clip(signal + background, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def nuclei_3d() -> list[LayerDataTuple]:
    """A synthetic 24 x 128 x 128 uint16 stack with six nuclei (seeded, no download)."""
    return [(make_nuclei_stack(), {"name": "nuclei 3D"}, "image")]
