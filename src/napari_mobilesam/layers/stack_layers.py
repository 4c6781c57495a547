"""3D work on napari layers: follow the current objects through the stack, write them back.

No Qt here. The widget runs :func:`propagation_steps` and :func:`precompute_steps` in thread
workers; scripts call :func:`propagate_from_layers`. Planes are the image layer's data planes:
walking moves one data index along ``axis``, and a layer's scale (anisotropic voxels included)
only matters when prompts are mapped into data coordinates, which happens once, on the start
plane.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Points

from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.propagation import (
    PropagatedObject,
    PropagationProgress,
    PropagationSettings,
    Seed,
    nearest_first_planes,
    propagate,
)
from napari_mobilesam.engine.steps import drive
from napari_mobilesam.layers.layer_prompts import _positive_flags, prompt_to_image_data
from napari_mobilesam.layers.plane import PlaneRef
from napari_mobilesam.layers.segment import SegmentedObject, SegmentRequest, ensure_embedding


def walk_axes(plane: PlaneRef) -> list[int]:
    """The data axes a plane can move along (those not displayed)."""
    return [axis for axis, index in enumerate(plane.slice_index) if index is not None]


def default_walk_axis(plane: PlaneRef) -> int:
    """The last non-displayed axis: Z in (Z, Y, X) and in (T, Z, Y, X) data."""
    axes = walk_axes(plane)
    if not axes:
        raise ValueError("This image is 2D: there is no stack to walk through.")
    return axes[-1]


def plane_at(plane: PlaneRef, axis: int, index: int) -> PlaneRef:
    """The same plane moved to ``index`` along ``axis``."""
    slice_index = list(plane.slice_index)
    if slice_index[axis] is None:
        raise ValueError(f"axis {axis} is displayed; pick a non-displayed axis to walk.")
    slice_index[axis] = int(index)
    return dataclasses.replace(plane, slice_index=tuple(slice_index))


def stop_planes(
    points: Points | None, image: Image, plane: PlaneRef, axis: int, viewer_or_dims: Any
) -> frozenset[int]:
    """Planes along ``axis`` holding a negative point: the user's "stop here" markers.

    A negative point counts when its other non-displayed coordinates match the current plane
    (same time point in 4D data) and it lies on another plane than the current one.
    """
    if points is None or len(points.data) == 0:
        return frozenset()
    negative = ~_positive_flags(points)
    if not negative.any():
        return frozenset()
    data = np.asarray(points.data, dtype=np.float64)[negative]
    positions = np.round(prompt_to_image_data(data, points, image, viewer_or_dims)).astype(int)
    keep = np.ones(len(positions), dtype=bool)
    for other, index in enumerate(plane.slice_index):
        if index is not None and other != axis:
            keep &= positions[:, other] == index
    planes = {int(p) for p in positions[keep, axis]} - {plane.slice_index[axis]}
    return frozenset(planes)


def planes_in_layer(axis: int, image: Image) -> int:
    """Length of the image along data axis ``axis``."""
    from napari_mobilesam.layers.plane import spatial_shape

    return int(spatial_shape(image)[axis])


def _embedder(request: SegmentRequest, axis: int, predictor: Any, cache: EmbeddingCache | None):
    """plane index -> (embedding, (H, W)) through the widget's cache and normalisation."""

    def embed(index: int) -> tuple[Any, tuple[int, int]]:
        moved = dataclasses.replace(request, plane=plane_at(request.plane, axis, index))
        ensure_embedding(moved, predictor, cache)
        return predictor.get_image_embedding(), moved.plane.shape

    return embed


class PlaneMasks(dict):
    """One propagated object: its (H, W) bool masks by :class:`PlaneRef` (a plain ``dict`` to
    :func:`~napari_mobilesam.layers.labels_writer.write_objects`), and the walk's outcome.

    Attributes:
        start: the plane index the walk started from, along ``axis``.
        axis: the data axis walked.
        stop_reasons: why each direction stopped, e.g. ``{"up": "IoU 0.12 < 0.3 on plane 19"}``.
        seed: the object on the start plane it was followed from (its prompts are what a
            project folder records), or None.
        settings: the stop rules of the walk, or None.
    """

    def __init__(
        self,
        masks: dict,
        start: int,
        axis: int,
        stop_reasons: dict[str, str],
        seed: SegmentedObject | None = None,
        settings: PropagationSettings | None = None,
    ) -> None:
        super().__init__(masks)
        self.start = start
        self.axis = axis
        self.stop_reasons = dict(stop_reasons)
        self.seed = seed
        self.settings = settings

    @property
    def reach(self) -> dict[str, int]:
        """Planes reached beyond the start plane in each direction: ``{"up": 6, "down": 2}``."""
        indices = [plane.slice_index[self.axis] for plane in self] or [self.start]
        return {"up": max(indices) - self.start, "down": self.start - min(indices)}


def propagation_steps(
    request: SegmentRequest,
    objects: Sequence[SegmentedObject],
    axis: int,
    n_planes: int,
    predictor: Any,
    cache: EmbeddingCache | None,
    settings: PropagationSettings,
) -> Generator[PropagationProgress, None, list[PlaneMasks]]:
    """Follow ``objects`` (on ``request``'s plane) along ``axis``; masks by plane, per object.

    ``request`` carries the image source and the contrast limits captured on the main thread,
    so every plane is normalised the same way as the one on screen.
    """
    start = request.plane.slice_index[axis]
    seeds = [Seed(obj.mask, obj.low_res) for obj in objects]
    embed = _embedder(request, axis, predictor, cache)
    # The seeds' own plane must be the predictor's image when the walk starts.
    embed(start)
    results: list[PropagatedObject] = yield from propagate(
        predictor, embed, n_planes, start, seeds, settings
    )
    return [
        PlaneMasks(
            {plane_at(request.plane, axis, z): mask for z, mask in obj.masks.items()},
            start,
            axis,
            obj.stop_reasons,
            seed=seed,
            settings=settings,
        )
        for obj, seed in zip(results, objects, strict=True)
    ]


def precompute_steps(
    request: SegmentRequest,
    axis: int,
    n_planes: int,
    predictor: Any,
    cache: EmbeddingCache,
    limit: int | None = None,
) -> Generator[tuple[int, int, int], None, int]:
    """Embed planes nearest the current one first, skipping cached ones (so it resumes).

    Yields (plane, done, total) after each plane; returns how many planes were encoded. At most
    ``limit`` planes (default: what the cache can hold), since encoding more would only evict
    the nearest ones again.
    """
    start = request.plane.slice_index[axis]
    capacity = cache.max_entries if limit is None else limit
    order = nearest_first_planes(start, n_planes)[: max(1, capacity)]
    encoded = 0
    for done, index in enumerate(order, start=1):
        moved = dataclasses.replace(request, plane=plane_at(request.plane, axis, index))
        if moved.cache_key not in cache:
            ensure_embedding(moved, predictor, cache)
            encoded += 1
        yield index, done, len(order)
    return encoded


def propagate_from_layers(
    viewer_or_dims: Any,
    image: Image,
    objects: Sequence[SegmentedObject],
    *,
    predictor: Any,
    points: Points | None = None,
    axis: int | None = None,
    settings: PropagationSettings | None = None,
    cache: EmbeddingCache | None = None,
) -> list[PlaneMasks]:
    """Follow objects segmented on the current plane through the stack, synchronously.

    Arguments:
      objects: from :func:`napari_mobilesam.layers.segment.segment_from_layers` on this plane.
      points: the prompt Points layer; its negative points on other planes are stop markers.
      axis: data axis to walk (default: the last non-displayed axis, i.e. Z).
      settings: stop rules (:class:`~napari_mobilesam.engine.propagation.PropagationSettings`).

    Returns:
      Per object, its masks by plane (a :class:`PlaneMasks`, which also says why each direction
      stopped); write them with :func:`napari_mobilesam.layers.labels_writer.write_objects`
      (one undo step).
    """
    from napari_mobilesam.layers.segment import capture_request

    if not objects:
        raise ValueError("Segment an object on this plane first; there is nothing to follow.")
    request = capture_request(viewer_or_dims, image)
    axis = default_walk_axis(request.plane) if axis is None else axis
    settings = settings or PropagationSettings()
    markers = stop_planes(points, image, request.plane, axis, viewer_or_dims)
    if markers:
        settings = dataclasses.replace(settings, stop_planes=settings.stop_planes | markers)
    n_planes = planes_in_layer(axis, image)
    return drive(propagation_steps(request, objects, axis, n_planes, predictor, cache, settings))
