"""Segment everything on layers, without Qt: which planes a run covers, the tile choice, the
tiled path end to end with the threshold stand-in, and 3D ids linked across planes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from napari.components import ViewerModel

from fakes import ThresholdMaskGenerator
from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.steps import drive
from napari_mobilesam.layers.everything_layers import (
    AUTO_TILE,
    EverythingSettings,
    everything_steps,
    plan_job,
)
from napari_mobilesam.layers.segment import capture_request


def request_for(data: np.ndarray, point: tuple[float, ...] | None = None):
    viewer = ViewerModel()
    image = viewer.add_image(data, contrast_limits=(0, 255))
    if point is not None:
        viewer.dims.point = point
    return capture_request(viewer, image)


@pytest.mark.parametrize(
    "tile_size, shape, expected",
    [
        (0, (AUTO_TILE, AUTO_TILE), None),  # automatic: whole planes up to 1024 px
        (0, (AUTO_TILE + 1, 50), AUTO_TILE),
        (None, (5000, 5000), None),  # off
        (512, (100, 100), 512),
    ],
)
def test_the_tile_choice(tile_size, shape, expected):
    assert EverythingSettings(tile_size=tile_size).tile_shape(shape) == expected


def test_a_run_covers_the_current_plane_or_the_stack_at_the_current_time():
    data = np.zeros((3, 4, 20, 30), np.uint8)  # (T, Z, Y, X)
    request = request_for(data, (1, 2, 0, 0))
    one = plan_job(request, EverythingSettings())
    assert [p.slice_index for p in one.planes] == [(1, 2, None, None)]
    stack = plan_job(request, EverythingSettings(whole_stack=True))
    assert stack.axis == 1
    assert [p.slice_index for p in stack.planes] == [(1, z, None, None) for z in range(4)]
    flat = plan_job(request_for(np.zeros((20, 30), np.uint8)), EverythingSettings(whole_stack=True))
    assert len(flat.planes) == 1 and flat.axis is None


@pytest.mark.parametrize(
    "settings, message",
    [
        (EverythingSettings(points_per_side=0), "points per side"),
        (EverythingSettings(tile_size=16), "tile size"),
    ],
)
def test_settings_out_of_range_are_refused_before_any_work(settings, message):
    with pytest.raises(ValueError, match=message):
        plan_job(request_for(np.zeros((20, 30), np.uint8)), settings)


def test_tiles_find_small_objects_on_a_large_plane_without_seams_or_duplicates():
    data = np.zeros((1300, 300), np.uint8)
    rr, cc = np.ogrid[:1300, :300]
    centres = [(40, 40), (700, 150), (1020, 150), (1250, 260)]  # one across the tile border
    for row, col in centres:
        data[(rr - row) ** 2 + (cc - col) ** 2 <= 100] = 255
    job = plan_job(request_for(data), EverythingSettings(min_size=0, tile_size=0))
    generator = ThresholdMaskGenerator(points_per_side=64)
    result = drive(everything_steps(job, generator, EmbeddingCache()))
    (labels,) = result.labels.values()
    assert generator.runs == 2  # two tiles of 1024 rows (with their halo)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3, 4]
    for row, col in centres:
        assert np.count_nonzero(labels == labels[row, col]) == np.count_nonzero(
            (rr - row) ** 2 + (cc - col) ** 2 <= 100
        )


def test_objects_are_linked_across_planes_and_blank_planes_are_skipped():
    data = np.zeros((4, 40, 40), np.uint8)
    data[0:2, 5:15, 5:15] = 255  # one object on planes 0-1
    data[1, 25:35, 25:35] = 255  # another on plane 1 only
    data[3, 5:15, 5:15] = 255  # plane 2 is blank: plane 3's object is a new one
    job = plan_job(request_for(data, (0, 0, 0)), EverythingSettings(whole_stack=True, min_size=0))
    generator = ThresholdMaskGenerator(points_per_side=16)
    cache = EmbeddingCache()
    result = drive(everything_steps(job, generator, cache))
    planes = [result.labels[p] for p in job.planes]
    assert planes[0][10, 10] == planes[1][10, 10] == 1
    assert planes[1][30, 30] == 2
    assert not planes[2].any() and planes[3][10, 10] == 3
    assert result.constant_planes == 1 and result.n_objects == 3
    # The embeddings went into the shared cache, under the interactive path's keys.
    moved = [dataclasses.replace(job.request, plane=plane) for plane in job.planes]
    assert [r.cache_key in cache for r in moved] == [True, True, False, True]
