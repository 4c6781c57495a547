"""Prompt layers on the image's grid, and positive/negative points coloured by their feature."""

from __future__ import annotations

import numpy as np
from napari.layers import Image

from napari_mobilesam.layers.prompt_layer_setup import (
    flip_points,
    make_points_layer,
    make_shapes_layer,
    new_points_positive,
    set_new_points_positive,
)

LIME = [0.0, 1.0, 0.0]
MAGENTA = [1.0, 0.0, 1.0]


def _image() -> Image:
    return Image(np.zeros((5, 60, 80)), scale=(2, 0.5, 0.5), translate=(1, 2, 3), rotate=15)


def test_layers_share_the_images_grid() -> None:
    image = _image()
    for layer in (make_points_layer(image), make_shapes_layer(image)):
        assert layer.ndim == 3
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
        np.testing.assert_allclose(layer.rotate, image.rotate)


def test_new_points_take_the_current_polarity_and_colour() -> None:
    points = make_points_layer(_image())
    assert new_points_positive(points)
    points.add([[0, 1, 2]])
    set_new_points_positive(points, False)
    assert not new_points_positive(points)
    points.add([[0, 3, 4]])

    assert points.features["positive"].tolist() == [True, False]
    np.testing.assert_allclose(points.face_color[:, :3], [LIME, MAGENTA])


def test_flipping_points_recolours_them() -> None:
    points = make_points_layer(_image())
    points.add([[0, 1, 2], [0, 3, 4]])
    flip_points(points, [1])
    assert points.features["positive"].tolist() == [True, False]
    np.testing.assert_allclose(points.face_color[:, :3], [LIME, MAGENTA])
    flip_points(points, [])
    assert points.features["positive"].tolist() == [True, False]
