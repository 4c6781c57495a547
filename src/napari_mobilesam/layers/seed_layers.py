"""Find seeds on the current plane of an image layer and put them in an editable Points layer.

The seeds (:func:`~napari_mobilesam.engine.seeds.find_seeds`) are found on the pixels the
model sees (the layer's contrast limits, so what looks bright on screen is bright here), then
turned into the image's data coordinates: SAM's (x, y) become napari's (row, col) here, once.
The Points layer they go into is a normal prompt layer: positive points, which the user can
move, add or delete before running them as one object per point.

Example::

    seeds = find_plane_seeds(viewer, image, diameter=30)
    viewer.add_layer(seeds_layer(image, seeds))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Points

from napari_mobilesam.engine.seeds import DEFAULT_THRESHOLD, MAX_SEEDS, find_seeds
from napari_mobilesam.layers.layer_prompts import POSITIVE_FEATURE, PlanePrompts
from napari_mobilesam.layers.plane import PlaneRef, current_plane, full_resolution_data
from napari_mobilesam.layers.prompt_layer_setup import make_points_layer
from napari_mobilesam.layers.segment import SegmentRequest, model_input, normalisation_key

SEEDS_NAME = "MobileSAM seeds"


def plane_request(viewer_or_dims: Any, image: Image) -> SegmentRequest:
    """A request for the current plane's pixels (no prompts), read on the main thread."""
    limits = tuple(float(v) for v in image.contrast_limits)
    return SegmentRequest(
        plane=current_plane(viewer_or_dims, image),
        prompts=PlanePrompts(),
        source=full_resolution_data(image),
        rgb=bool(image.rgb),
        contrast_limits=(limits[0], limits[1]),
        normalisation=normalisation_key(image),
    )


def seeds_of_request(
    request: SegmentRequest,
    diameter: float,
    threshold: float = DEFAULT_THRESHOLD,
    dark: bool = False,
    max_seeds: int = MAX_SEEDS,
) -> np.ndarray:
    """(N, ndim) seeds in the image's data coordinates (any thread).

    A plane reduced for the encoder (4096 pixels or more on a side) is searched at the reduced
    size, with the diameter scaled the same way; the seeds are scaled back.
    """
    pixels = model_input(request)
    plane = request.plane
    scale = plane.shape[0] / pixels.shape[0], plane.shape[1] / pixels.shape[1]
    xy = find_seeds(pixels, float(diameter) / max(scale), threshold, dark=dark, max_seeds=max_seeds)
    rows = xy[:, 1] * scale[0] + (scale[0] - 1) / 2
    cols = xy[:, 0] * scale[1] + (scale[1] - 1) / 2
    return plane_to_data(plane, np.stack([rows, cols], axis=1))


def plane_to_data(plane: PlaneRef, rowcol: np.ndarray) -> np.ndarray:
    """(N, 2) screen (row, col) positions on ``plane`` -> (N, ndim) data coordinates."""
    out = np.zeros((len(rowcol), len(plane.slice_index)), dtype=np.float64)
    for axis, index in enumerate(plane.slice_index):
        if axis == plane.displayed[0]:
            out[:, axis] = rowcol[:, 0]
        elif axis == plane.displayed[1]:
            out[:, axis] = rowcol[:, 1]
        else:
            out[:, axis] = index
    return out


def find_plane_seeds(
    viewer_or_dims: Any,
    image: Image,
    diameter: float,
    threshold: float = DEFAULT_THRESHOLD,
    dark: bool = False,
    max_seeds: int = MAX_SEEDS,
) -> np.ndarray:
    """Seeds of the viewer's current plane of ``image``, (N, ndim) data coordinates."""
    request = plane_request(viewer_or_dims, image)
    return seeds_of_request(request, diameter, threshold, dark, max_seeds)


def seeds_layer(image: Image, seeds: np.ndarray, name: str = SEEDS_NAME) -> Points:
    """A prompt Points layer on the image's grid holding ``seeds`` as positive points."""
    layer = make_points_layer(image, name=name)
    set_seeds(layer, seeds)
    return layer


def set_seeds(layer: Points, seeds: np.ndarray) -> None:
    """Replace the points of ``layer`` with ``seeds`` (all positive)."""
    seeds = np.asarray(seeds, dtype=np.float64).reshape(-1, layer.ndim)
    features = pd.DataFrame({POSITIVE_FEATURE: np.ones(len(seeds), dtype=bool)})
    layer.data = seeds
    layer.features = features
    layer.refresh_colors()
