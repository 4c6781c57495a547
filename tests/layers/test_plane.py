"""The displayed plane of image layers: slicing by world position, axes order, RGB, lazy data."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image

from napari_mobilesam.layers.plane import PlaneError, current_plane, read_plane, spatial_shape


def _stack(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)


def test_slice_comes_from_world_position_not_current_step() -> None:
    viewer = ViewerModel()
    # A finer layer makes the world grid step 1 along z, so current_step and the scaled
    # image's own index disagree.
    viewer.add_layer(Image(np.zeros((10, 4, 4)), name="fine"))
    data = _stack((5, 6, 7))
    image = viewer.add_layer(Image(data, scale=(2, 0.5, 0.5), translate=(0, 10, 20)))
    viewer.dims.set_point(0, 4)

    plane = current_plane(viewer, image)

    assert viewer.dims.current_step[0] == 4
    assert plane.slice_index == (2, None, None)
    assert plane.displayed == (1, 2)
    np.testing.assert_array_equal(read_plane(image, plane), data[2])


def test_4d_image_and_plane_key() -> None:
    viewer = ViewerModel()
    data = _stack((3, 4, 5, 6))
    image = viewer.add_layer(Image(data))
    viewer.dims.set_point(0, 2)
    viewer.dims.set_point(1, 1)

    plane = current_plane(viewer, image)

    assert plane.slice_index == (2, 1, None, None)
    assert plane.shape == (5, 6)
    assert plane.key == (str(image.unique_id), (2, 1, None, None), (2, 3))
    np.testing.assert_array_equal(read_plane(image, plane), data[2, 1])


def test_transposed_display_reads_and_writes_in_screen_order() -> None:
    viewer = ViewerModel()
    data = _stack((4, 5, 6))
    image = viewer.add_layer(Image(data))
    viewer.dims.set_point(0, 3)
    viewer.dims.order = (0, 2, 1)

    plane = current_plane(viewer, image)
    pixels = read_plane(image, plane)

    assert plane.displayed == (2, 1)
    assert pixels.shape == (6, 5)
    np.testing.assert_array_equal(pixels, data[3].T)
    mask = np.zeros((6, 5), dtype=bool)
    mask[4, 1] = True  # screen row 4 is data axis 2, screen column 1 is data axis 1
    assert plane.mask_indices(mask) == (np.array([3]), np.array([1]), np.array([4]))


def test_other_displayed_axes() -> None:
    viewer = ViewerModel()
    data = _stack((4, 5, 6))
    image = viewer.add_layer(Image(data))
    viewer.dims.order = (1, 0, 2)
    viewer.dims.set_point(1, 2)

    plane = current_plane(viewer, image)

    assert plane.slice_index == (None, 2, None)
    np.testing.assert_array_equal(read_plane(image, plane), data[:, 2, :])


def test_rgb_keeps_colour_axis() -> None:
    viewer = ViewerModel()
    data = np.random.default_rng(0).integers(0, 255, (3, 6, 7, 3), dtype=np.uint8)
    image = viewer.add_layer(Image(data, rgb=True))
    viewer.dims.set_point(0, 1)

    plane = current_plane(viewer, image)

    assert spatial_shape(image) == (3, 6, 7)
    assert plane.shape == (6, 7)
    np.testing.assert_array_equal(read_plane(image, plane), data[1])


def test_multiscale_reads_full_resolution() -> None:
    viewer = ViewerModel()
    full = _stack((2, 8, 8))
    image = viewer.add_layer(Image([full, full[:, ::2, ::2]], multiscale=True))
    viewer.dims.set_point(0, 1)

    plane = current_plane(viewer, image)

    assert plane.shape == (8, 8)
    np.testing.assert_array_equal(read_plane(image, plane), full[1])


def test_dask_reads_one_plane_only() -> None:
    dask = pytest.importorskip("dask")
    import dask.array as da

    loaded: list[int] = []

    def load(index: int) -> np.ndarray:
        loaded.append(index)
        return np.full((6, 7), index, dtype=np.uint16)

    planes = [
        da.from_delayed(dask.delayed(load)(i), shape=(6, 7), dtype=np.uint16) for i in range(5)
    ]
    viewer = ViewerModel()
    image = viewer.add_layer(Image(da.stack(planes), contrast_limits=(0, 5)))
    viewer.dims.set_point(0, 3)
    loaded.clear()

    pixels = read_plane(image, current_plane(viewer, image))

    assert loaded == [3]
    assert pixels.shape == (6, 7)
    assert (pixels == 3).all()


def test_2d_image_in_a_3d_world() -> None:
    viewer = ViewerModel()
    viewer.add_layer(Image(np.zeros((4, 6, 7))))
    data = _stack((6, 7))
    image = viewer.add_layer(Image(data))
    viewer.dims.set_point(0, 2)

    plane = current_plane(viewer, image)

    assert plane.slice_index == (None, None)
    np.testing.assert_array_equal(read_plane(image, plane), data)


def test_3d_view_is_refused() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((4, 6, 7))))
    viewer.dims.ndisplay = 3
    with pytest.raises(PlaneError, match="2D view"):
        current_plane(viewer, image)


def test_slice_outside_the_layer_is_refused() -> None:
    viewer = ViewerModel()
    viewer.add_layer(Image(np.zeros((10, 6, 7))))
    image = viewer.add_layer(Image(np.zeros((3, 6, 7))))
    viewer.dims.set_point(0, 8)
    with pytest.raises(PlaneError, match="outside"):
        current_plane(viewer, image)


def test_mask_shape_is_checked() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((6, 7))))
    plane = current_plane(viewer, image)
    with pytest.raises(ValueError, match="shape"):
        plane.mask_indices(np.zeros((7, 6), dtype=bool))
