"""Offline sample data: shapes, dtypes, determinism, and nuclei that change smoothly along z."""

from __future__ import annotations

import numpy as np

from napari_mobilesam.layers.sample_data import cell_2d, make_nuclei_stack, nuclei_3d


def test_cell_is_a_bundled_2d_image() -> None:
    ((data, kwargs, kind),) = cell_2d()
    assert kind == "image" and kwargs["name"] == "cell"
    assert data.ndim == 2 and data.size > 0


def test_nuclei_stack_is_deterministic_uint16() -> None:
    ((data, kwargs, kind),) = nuclei_3d()
    assert kind == "image" and kwargs["name"] == "nuclei 3D"
    assert data.shape == (24, 128, 128) and data.dtype == np.uint16
    np.testing.assert_array_equal(data, make_nuclei_stack())
    assert not np.array_equal(make_nuclei_stack(seed=1), data)


def test_nuclei_are_bright_blobs_whose_area_changes_smoothly() -> None:
    data = make_nuclei_stack()
    foreground = data > 1000
    area = foreground.sum(axis=(1, 2))
    assert area[0] < area[12] and area[-1] < area[12]  # nuclei are centred in depth
    assert 0.02 < foreground[12].mean() < 0.5
    assert np.abs(np.diff(area)).max() < 0.25 * area.max()  # no jumps between slices
