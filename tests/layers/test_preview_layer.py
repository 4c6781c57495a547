"""The preview layer shows one plane's masks and erases the plane it drew before."""

from __future__ import annotations

import numpy as np
from napari.components import ViewerModel
from napari.layers import Image, Points

from napari_mobilesam.layers.plane import PlaneRef
from napari_mobilesam.layers.preview_layer import (
    PREVIEW_NAME,
    PreviewManager,
    PreviewPainter,
    fits,
    make_preview_layer,
)


def test_preview_is_aligned_and_not_editable() -> None:
    image = Image(np.zeros((3, 8, 9)), scale=(2, 1, 1))
    preview = make_preview_layer(image)
    assert preview.name == PREVIEW_NAME
    assert preview.data.shape == (3, 8, 9)
    assert not preview.editable
    np.testing.assert_allclose(preview.scale, image.scale)
    assert fits(preview, image)
    assert not fits(preview, Image(np.zeros((3, 8, 10))))


def test_painter_draws_one_plane_at_a_time_in_screen_order() -> None:
    preview = make_preview_layer(Image(np.zeros((3, 8, 9))))
    painter = PreviewPainter()
    first = PlaneRef("id", (1, None, None), (1, 2), (8, 9))
    a = np.zeros((8, 9), dtype=bool)
    a[1:3, 1:3] = True
    b = np.zeros((8, 9), dtype=bool)
    b[2:5, 2:5] = True

    painter.draw(preview, first, [a, b])
    assert preview.data[1, 1, 1] == 1
    assert preview.data[1, 2, 2] == 2  # the later object shows where they overlap
    assert np.count_nonzero(preview.data[[0, 2]]) == 0

    transposed = PlaneRef("id", (2, None, None), (2, 1), (9, 8))
    c = np.zeros((9, 8), dtype=bool)
    c[7, 1] = True  # screen row 7 is data column 7, screen column 1 is data row 1
    painter.draw(preview, transposed, [c])
    assert np.count_nonzero(preview.data[1]) == 0  # the earlier plane was erased
    assert preview.data[2, 1, 7] == 1
    assert np.count_nonzero(preview.data) == 1

    painter.clear(preview)
    assert np.count_nonzero(preview.data) == 0


def test_manager_places_replaces_and_removes_the_preview() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((3, 8, 9))))
    points = viewer.add_layer(Points(ndim=3))
    viewer.layers.selection.active = points
    manager = PreviewManager(viewer)
    plane = PlaneRef(str(image.unique_id), (1, None, None), (1, 2), (8, 9))
    mask = np.zeros((8, 9), dtype=bool)
    mask[2, 3] = True

    manager.show(image, plane, [mask])
    first = manager.layer
    assert list(viewer.layers) == [image, first, points]  # just above its image
    assert viewer.layers.selection.active is points  # the user's layer stays selected
    manager.clear()
    assert np.count_nonzero(first.data) == 0

    other = viewer.add_layer(Image(np.zeros((3, 8, 9))))
    manager.show(other, PlaneRef(str(other.unique_id), (0, None, None), (1, 2), (8, 9)), [mask])
    assert first not in viewer.layers and manager.layer in viewer.layers
    assert np.count_nonzero(manager.layer.data[0]) == 1

    viewer.layers.remove(other)
    manager.layer_removed(other)
    assert manager.layer is None
    assert [layer.name for layer in viewer.layers] == [image.name, points.name]
