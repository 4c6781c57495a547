"""Writing a whole label image into Labels: ids above the layer's, protection, one undo step,
and results that cannot be written writing nothing."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

from napari_mobilesam.layers.label_image_writer import write_label_image
from napari_mobilesam.layers.labels_writer import LabelsError
from napari_mobilesam.layers.plane import PlaneRef


def plane_2d(shape=(20, 30), layer_id="img") -> PlaneRef:
    return PlaneRef(layer_id, (None, None), (0, 1), shape)


def plane_3d(z: int, shape=(20, 30)) -> PlaneRef:
    return PlaneRef("img", (z, None, None), (1, 2), shape)


def three_objects(shape=(20, 30)) -> np.ndarray:
    image = np.zeros(shape, np.int32)
    image[2:6, 2:6] = 1
    image[10:15, 10:20] = 2
    image[16:19, 25:29] = 3
    return image


def test_ids_start_above_the_layer_and_one_undo_restores():
    labels = Labels(np.zeros((20, 30), np.uint16))
    labels.data[0, 0] = 4  # an earlier object
    before = labels.data.copy()
    image = three_objects()
    report = write_label_image(labels, {plane_2d(): image})
    assert report.ids == [5, 6, 7]
    assert report.found == 3 and report.written == int(np.count_nonzero(image))
    expected = np.where(image > 0, image + 4, before)
    assert np.array_equal(labels.data, expected)
    labels.undo()
    assert np.array_equal(labels.data, before)
    labels.redo()
    assert np.array_equal(labels.data, expected)


def test_protection_keeps_existing_labels_and_skips_covered_objects():
    labels = Labels(np.zeros((20, 30), np.uint32))
    labels.data[2:6, 2:6] = 9  # covers object 1 whole
    labels.data[10:15, 10:12] = 8  # covers part of object 2
    before = labels.data.copy()
    report = write_label_image(labels, {plane_2d(): three_objects()})
    assert report.ids == [10, 11]  # consecutive: the covered object takes no id
    assert report.skipped == 1
    assert report.protected == 16 + 10
    assert np.array_equal(labels.data[before > 0], before[before > 0])
    assert np.count_nonzero(labels.data == 10) == 50 - 10
    labels.undo()
    assert np.array_equal(labels.data, before)


def test_without_protection_existing_pixels_are_overwritten():
    labels = Labels(np.zeros((20, 30), np.uint32))
    labels.data[2:4, 2:4] = 9
    report = write_label_image(labels, {plane_2d(): three_objects()}, protect=False)
    assert report.ids == [10, 11, 12] and report.protected == 0
    assert np.all(labels.data[2:6, 2:6] == 10)


def test_a_3d_object_keeps_one_id_across_planes_in_one_undo_step():
    labels = Labels(np.zeros((4, 20, 30), np.uint16))
    first, second = np.zeros((20, 30), np.int32), np.zeros((20, 30), np.int32)
    first[5:10, 5:10] = 1
    second[5:10, 5:10] = 1
    second[12:15, 20:25] = 2
    report = write_label_image(labels, {plane_3d(1): first, plane_3d(2): second})
    assert report.ids == [1, 2]
    assert set(np.unique(labels.data[1])) == {0, 1}
    assert set(np.unique(labels.data[2])) == {0, 1, 2}
    labels.undo()
    assert not labels.data.any()


def test_a_dtype_too_small_for_the_ids_writes_nothing():
    labels = Labels(np.zeros((20, 30), np.uint8))
    labels.data[0, 0] = 253
    before = labels.data.copy()
    with pytest.raises(LabelsError, match=r"uint8.*255.*254 to 256"):
        write_label_image(labels, {plane_2d(): three_objects()})
    assert np.array_equal(labels.data, before)
    labels.undo()  # there was nothing to undo: the earlier state stays
    assert np.array_equal(labels.data, before)


@pytest.mark.parametrize(
    "plane, image",
    [
        (plane_2d((20, 31)), np.ones((20, 31), np.int32)),  # another layer's plane
        (plane_3d(0), np.ones((20, 30), np.int32)),  # a 3D plane for a 2D layer
        (plane_2d(), np.ones((20, 30), np.float32)),  # not integer ids
    ],
)
def test_a_label_image_that_does_not_fit_writes_nothing(plane, image):
    labels = Labels(np.zeros((20, 30), np.uint16))
    with pytest.raises(LabelsError):
        write_label_image(labels, {plane_2d(): three_objects(), plane: image})
    assert not labels.data.any()


def test_an_empty_label_image_writes_nothing_and_adds_no_undo_step():
    labels = Labels(np.zeros((20, 30), np.uint16))
    labels.data[0, 0] = 3
    report = write_label_image(labels, {plane_2d(): np.zeros((20, 30), np.int32)})
    assert report.ids == [] and report.found == 0
    assert labels.data[0, 0] == 3
