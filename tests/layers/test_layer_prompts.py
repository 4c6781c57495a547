"""Prompts from Points/Shapes layers in the image's plane pixels, SAM (x, y) order, grouped."""

from __future__ import annotations

import numpy as np
from napari.components import ViewerModel
from napari.layers import Image, Points, Shapes

from napari_mobilesam.layers.layer_prompts import (
    PromptGroup,
    read_plane_prompts,
    rowcol_to_xy,
)
from napari_mobilesam.layers.plane import current_plane


def _points(data: list[list[float]], positive: list[bool] | None = None, **kwargs) -> Points:
    data_array = np.asarray(data, dtype=float)
    features = None if positive is None else {"positive": np.asarray(positive, dtype=bool)}
    return Points(data_array, features=features, **kwargs)


def _prompts(viewer: ViewerModel, image: Image, points=None, shapes=None):
    plane = current_plane(viewer, image)
    return read_plane_prompts(viewer, image, plane, points, shapes)


def test_rowcol_to_xy_swaps_axes() -> None:
    np.testing.assert_array_equal(
        rowcol_to_xy(np.array([[1.0, 2.0], [3.0, 4.0]])), [[2, 1], [4, 3]]
    )


def test_point_on_scaled_translated_image_lands_in_image_pixels() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(
        Image(np.zeros((5, 40, 60)), scale=(2, 0.5, 0.5), translate=(0, 10, 20))
    )
    # The points layer lives in world units (scale 1): world (4, 15, 30) is image data (2, 10, 20).
    points = viewer.add_layer(_points([[4, 15, 30], [2, 15, 30]], [True, True]))
    viewer.dims.set_point(0, 4)

    prompts = _prompts(viewer, image, points)

    assert len(prompts.groups) == 1
    group = prompts.groups[0]
    np.testing.assert_allclose(group.point_coords, [[20.0, 10.0]])  # (x, y) = (col, row)
    np.testing.assert_array_equal(group.point_labels, [1])
    assert prompts.point_indices == (0,)  # the point at world z=2 is on another slice


def test_prompt_layer_with_its_own_scale_and_translate() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((50, 50)), scale=(2, 2), translate=(5, 5)))
    points = viewer.add_layer(_points([[3, 4]], scale=(4, 4), translate=(1, 1)))
    # world = 4 * (3, 4) + 1 = (13, 17); image data = (world - 5) / 2 = (4, 6).
    prompts = _prompts(viewer, image, points)
    np.testing.assert_allclose(prompts.groups[0].point_coords, [[6.0, 4.0]])


def test_rotated_prompt_layer() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((100, 100)), translate=(-50, -50)))
    points = viewer.add_layer(_points([[10, 0]], rotate=90))
    angle = np.deg2rad(90)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    row, col = rotation @ np.array([10.0, 0.0]) + 50  # world, then minus the image's translate

    prompts = _prompts(viewer, image, points)

    np.testing.assert_allclose(prompts.groups[0].point_coords, [[col, row]], atol=1e-9)


def test_2d_points_over_3d_image_apply_to_every_slice() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((4, 20, 30))))
    points = viewer.add_layer(_points([[5, 7]]))
    for z in (0, 3):
        viewer.dims.set_point(0, z)
        np.testing.assert_allclose(_prompts(viewer, image, points).groups[0].point_coords, [[7, 5]])


def test_points_with_more_axes_than_the_image_must_be_on_the_current_step() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((4, 20, 30))))
    points = viewer.add_layer(_points([[0, 1, 5, 7], [1, 1, 6, 8]]))  # (t, z, y, x)
    viewer.dims.set_point(0, 1)
    viewer.dims.set_point(1, 1)

    prompts = _prompts(viewer, image, points)

    assert prompts.point_indices == (1,)
    np.testing.assert_allclose(prompts.groups[0].point_coords, [[8, 6]])


def test_negative_points_and_missing_feature() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((20, 30))))
    labelled = viewer.add_layer(_points([[1, 2], [3, 4]], [True, False]))
    unlabelled = viewer.add_layer(_points([[1, 2], [3, 4]]))

    np.testing.assert_array_equal(_prompts(viewer, image, labelled).groups[0].point_labels, [1, 0])
    np.testing.assert_array_equal(
        _prompts(viewer, image, unlabelled).groups[0].point_labels, [1, 1]
    )


def test_negative_points_alone_describe_no_object() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((20, 30))))
    points = viewer.add_layer(_points([[1, 2], [3, 4]], [False, False]))

    prompts = _prompts(viewer, image, points)

    assert prompts.groups == ()
    assert prompts.skipped_negative_points == 2


def test_rectangle_on_scaled_shapes_layer_becomes_xyxy_box() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((3, 50, 60)), scale=(1, 2, 2)))
    shapes = viewer.add_layer(Shapes(ndim=3))
    # World corners (z=1): rows 10..30, cols 20..60 -> image data rows 5..15, cols 10..30.
    shapes.add_rectangles(np.array([[1, 30, 60], [1, 10, 60], [1, 10, 20], [1, 30, 20]]))
    viewer.dims.set_point(0, 1)

    prompts = _prompts(viewer, image, shapes=shapes)

    np.testing.assert_allclose(prompts.groups[0].box, [10, 5, 30, 15])
    assert prompts.groups[0].shape_index == 0

    viewer.dims.set_point(0, 2)
    assert _prompts(viewer, image, shapes=shapes).groups == ()


def test_rotated_rectangle_uses_its_bounding_box_and_other_shapes_are_skipped() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((100, 100))))
    shapes = viewer.add_layer(Shapes())
    diamond = np.array([[50, 30], [70, 50], [50, 70], [30, 50]], dtype=float)
    shapes.add_rectangles(diamond)
    shapes.add_ellipses(np.array([[10, 10], [20, 20]]))
    shapes.add_lines(np.array([[5, 5], [9, 9]]))

    prompts = _prompts(viewer, image, shapes=shapes)

    assert len(prompts.groups) == 1
    np.testing.assert_allclose(prompts.groups[0].box, [30, 30, 70, 70])
    assert prompts.skipped_shapes == 2
    assert prompts.shape_indices == (0, 1, 2)


def test_grouping_boxes_and_points() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((100, 100))))
    shapes = viewer.add_layer(Shapes())
    shapes.add_rectangles(np.array([[10, 10], [50, 50]]))  # big box
    shapes.add_rectangles(np.array([[20, 20], [30, 30]]))  # small box inside the big one
    shapes.add_rectangles(np.array([[60, 60], [90, 90]]))  # a box with no points
    points = viewer.add_layer(
        _points(
            [[25, 25], [40, 40], [5, 95], [6, 94], [45, 12]],
            [True, True, True, False, False],
        )
    )

    groups = _prompts(viewer, image, points, shapes).groups

    assert [g.shape_index for g in groups] == [0, 1, 2, None]
    big, small, lonely, free = groups
    assert big.point_indices == (1, 4)  # (25, 25) is in the smaller box, which wins
    np.testing.assert_array_equal(big.point_labels, [1, 0])
    assert small.point_indices == (0,)
    assert lonely.point_indices == ()
    assert lonely.predict_kwargs()["point_coords"] is None
    assert free.point_indices == (2, 3)
    assert free.box is None
    np.testing.assert_allclose(free.point_coords, [[95, 5], [94, 6]])


def test_group_extends_and_same_prompts() -> None:
    box = np.array([0.0, 0.0, 10.0, 10.0])
    one = PromptGroup(np.array([[1.0, 2.0]]), np.array([1]), box)
    two = PromptGroup(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 0]), box)
    moved = PromptGroup(np.array([[1.5, 2.0], [3.0, 4.0]]), np.array([1, 0]), box)
    other_box = PromptGroup(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 0]), box + 1)

    assert two.extends(one)
    assert not one.extends(two)
    assert not moved.extends(one)
    assert not other_box.extends(one)
    assert two.same_prompts(two)
    assert not two.same_prompts(moved)


def test_no_layers_give_no_prompts() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((20, 30))))
    assert _prompts(viewer, image).groups == ()
