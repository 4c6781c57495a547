"""Writing masks into Labels layers: ids, dtype limits, protection, alignment, one undo step."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels

from napari_mobilesam.layers.labels_writer import (
    LabelsError,
    check_target,
    create_aligned_labels,
    next_label_id,
    write_masks,
    write_objects,
)
from napari_mobilesam.layers.plane import PlaneRef, current_plane


def _plane_3d(viewer: ViewerModel, image: Image, z: int) -> PlaneRef:
    viewer.dims.set_point(0, image.data_to_world((z, 0, 0))[0])
    plane = current_plane(viewer, image)
    assert plane.slice_index[0] == z
    return plane


def _square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


@pytest.fixture
def scene() -> tuple[ViewerModel, Image, Labels]:
    viewer = ViewerModel()
    image = viewer.add_layer(
        Image(np.zeros((4, 10, 12), dtype=np.uint16), scale=(3, 0.5, 0.5), translate=(1, 2, 3))
    )
    labels = create_aligned_labels(image)
    viewer.add_layer(labels)
    return viewer, image, labels


def test_aligned_labels_copy_shape_dtype_and_transforms(scene) -> None:
    _, image, labels = scene
    assert labels.data.shape == (4, 10, 12)
    assert labels.data.dtype == np.uint32
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    check_target(labels, image)


def test_aligned_labels_for_rgb_image_drop_the_colour_axis() -> None:
    image = Image(np.zeros((10, 12, 3), dtype=np.uint8), rgb=True, rotate=30)
    labels = create_aligned_labels(image)
    assert labels.data.shape == (10, 12)
    np.testing.assert_allclose(labels.rotate, image.rotate)
    check_target(labels, image)


def test_writes_only_the_plane_with_new_ids(scene) -> None:
    viewer, image, labels = scene
    labels.data[0, 0, 0] = 7  # an existing label elsewhere
    plane = _plane_3d(viewer, image, 2)
    masks = [(plane, _square((10, 12), 1, 1, 3)), (plane, _square((10, 12), 5, 5, 2))]

    report = write_masks(labels, masks)

    assert report.ids == [8, 9]
    assert report.written == [9, 4]
    assert (labels.data[2][_square((10, 12), 1, 1, 3)] == 8).all()
    assert (labels.data[2] == 9).sum() == 4
    assert np.count_nonzero(labels.data[[1, 3]]) == 0
    assert labels.data[0, 0, 0] == 7


def test_protection_keeps_existing_labels_and_counts_pixels(scene) -> None:
    viewer, image, labels = scene
    plane = _plane_3d(viewer, image, 1)
    labels.data[1, 2, 2] = 5
    labels.data[1, 2, 3] = 5
    mask = _square((10, 12), 0, 0, 4)

    report = write_masks(labels, [(plane, mask)], protect=True)

    assert report.ids == [6]
    assert report.protected == [2]
    assert report.protected_total == 2
    assert labels.data[1, 2, 2] == 5 and labels.data[1, 2, 3] == 5
    assert (labels.data[1] == 6).sum() == 14


def test_without_protection_existing_labels_are_overwritten(scene) -> None:
    viewer, image, labels = scene
    plane = _plane_3d(viewer, image, 1)
    labels.data[1, 2, 2] = 5

    report = write_masks(labels, [(plane, _square((10, 12), 0, 0, 4))], protect=False)

    assert report.protected == [0]
    assert labels.data[1, 2, 2] == 6


def test_fully_protected_object_is_skipped_without_using_an_id(scene) -> None:
    viewer, image, labels = scene
    plane = _plane_3d(viewer, image, 0)
    labels.data[0, :4, :4] = 3
    masks = [(plane, _square((10, 12), 0, 0, 2)), (plane, _square((10, 12), 6, 6, 2))]

    report = write_masks(labels, masks)

    assert report.ids == [4]
    assert report.skipped == 1
    assert report.protected_total == 4


def test_overlapping_objects_in_one_commit_keep_the_first(scene) -> None:
    viewer, image, labels = scene
    plane = _plane_3d(viewer, image, 0)
    masks = [(plane, _square((10, 12), 0, 0, 4)), (plane, _square((10, 12), 2, 2, 4))]

    report = write_masks(labels, masks)

    assert report.ids == [1, 2]
    assert report.protected == [0, 0]  # the overlap held no label before this commit
    assert report.overlapped == 4
    assert labels.data[0, 3, 3] == 1


def test_one_commit_is_one_undo_step(scene) -> None:
    viewer, image, labels = scene
    labels.data[2, 0, 0] = 1
    before = labels.data.copy()
    plane = _plane_3d(viewer, image, 2)
    masks = [(plane, _square((10, 12), 1, 1, 3)), (plane, _square((10, 12), 5, 5, 3))]

    write_masks(labels, masks)
    after = labels.data.copy()
    assert not np.array_equal(before, after)

    labels.undo()
    np.testing.assert_array_equal(labels.data, before)
    labels.redo()
    np.testing.assert_array_equal(labels.data, after)


def test_next_id_and_full_dtype() -> None:
    image = Image(np.zeros((6, 6)))
    labels = Labels(np.zeros((6, 6), dtype=np.uint8))
    assert next_label_id(labels) == 1
    labels.data[0, 0] = 254
    assert next_label_id(labels) == 255
    plane = PlaneRef("x", (None, None), (0, 1), (6, 6))
    masks = [(plane, _square((6, 6), 1, 1, 1)), (plane, _square((6, 6), 3, 3, 1))]
    with pytest.raises(LabelsError, match="full"):
        write_masks(labels, masks)  # 255 fits, 256 does not: nothing is written
    assert labels.data.max() == 254 and np.count_nonzero(labels.data) == 1
    labels.data[0, 0] = 255
    with pytest.raises(LabelsError, match="uint8 holds ids up to 255"):
        next_label_id(labels)
    check_target(labels, image)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (Labels(np.zeros((10, 12), dtype=np.uint32)), "shape"),
        (Labels(np.zeros((4, 10, 12), dtype=np.uint32)), "scale/translate"),
    ],
)
def test_mismatched_targets_are_rejected(scene, labels: Labels, message: str) -> None:
    _, image, _ = scene
    with pytest.raises(LabelsError, match=message):
        check_target(labels, image)


def test_float_labels_are_rejected() -> None:
    # napari refuses float Labels itself; a layer-like object checks our own guard.
    image = Image(np.zeros((6, 6)))
    labels = SimpleNamespace(name="f", multiscale=False, data=np.zeros((6, 6), np.float32))
    with pytest.raises(LabelsError, match="integer dtype"):
        check_target(labels, image)


def test_lazy_labels_data_is_rejected() -> None:
    image = Image(np.zeros((6, 6)))
    labels = SimpleNamespace(name="z", multiscale=False, data=[[0] * 6] * 6)
    with pytest.raises(LabelsError, match="numpy"):
        check_target(labels, image)


@pytest.mark.parametrize(
    ("bad_plane", "bad_mask"),
    [
        (PlaneRef("other", (2, None, None), (1, 2), (20, 24)), np.ones((20, 24), bool)),  # bigger
        (PlaneRef("x", (9, None, None), (1, 2), (10, 12)), np.ones((10, 12), bool)),  # slice 9
        (PlaneRef("x", (None, None), (0, 1), (10, 12)), np.ones((10, 12), bool)),  # 2D on 3D
        (PlaneRef("x", (1, None, None), (1, 2), (10, 12)), np.ones((5, 5), bool)),  # mask shape
    ],
    ids=["other-image", "slice-outside", "fewer-axes", "mask-shape"],
)
def test_a_failed_commit_writes_nothing(scene, bad_plane: PlaneRef, bad_mask) -> None:
    """The last object does not fit: the first ones must not be written, and undo is untouched
    (the error used to come from numpy after the first object was written)."""
    viewer, image, labels = scene
    labels.data[0, 0, 0] = 7
    good = _plane_3d(viewer, image, 1)
    before = labels.data.copy()
    objects = [{good: _square((10, 12), 0, 0, 4)}, {good: _square((10, 12), 5, 5, 3)}]
    objects.append({good: _square((10, 12), 8, 8, 2), bad_plane: bad_mask})  # a 3D object
    with pytest.raises(LabelsError, match=r"Object 3 of 3 does not fit .* Nothing was written"):
        write_objects(labels, objects)
    np.testing.assert_array_equal(labels.data, before)
    labels.undo()  # no commit to undo: the layer keeps the label set before
    np.testing.assert_array_equal(labels.data, before)
    # The next good commit is one undo step of its own.
    assert write_objects(labels, objects[:2]).ids == [8, 9]
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_read_only_labels_are_refused_before_writing(scene) -> None:
    viewer, image, labels = scene
    plane = _plane_3d(viewer, image, 0)
    labels.data.flags.writeable = False
    with pytest.raises(LabelsError, match="read-only; give it a writable copy"):
        write_masks(labels, [(plane, _square((10, 12), 0, 0, 2))])
    assert not labels.data.any()
