"""masks_to_labels: overlap rule, min_size, hole filling, ids 1..N, every record form."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam.engine.instance_labels import masks_to_labels, relabel_sequential
from napari_mobilesam.engine.mask_records import PackedMask, mask_to_rle


def _record(mask: np.ndarray, score: float = 0.9) -> dict:
    return {"segmentation": mask, "predicted_iou": score, "area": int(mask.sum())}


def _square(shape, y0, x0, size) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


def test_smaller_masks_on_top_by_default():
    big = _square((20, 20), 0, 0, 15)
    small = _square((20, 20), 5, 5, 4)
    labels = masks_to_labels([_record(small), _record(big)])
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1, 2}
    # The big mask is painted first (id 1), the small one stays visible on top (id 2).
    assert (labels[small] == 2).all()
    assert (labels == 1).sum() == big.sum() - small.sum()


def test_score_order_lets_the_best_mask_win():
    a = _square((10, 10), 0, 0, 6)
    b = _square((10, 10), 3, 3, 6)
    labels = masks_to_labels([_record(a, 0.95), _record(b, 0.5)], order="score")
    assert (labels[a] == labels[0, 0]).all()  # a, the higher score, covers the overlap
    given = masks_to_labels([_record(a, 0.95), _record(b, 0.5)], order="given")
    assert (given[b] == given[8, 8]).all()  # later in the list wins


def test_min_size_counts_visible_pixels_and_ids_stay_consecutive():
    shape = (30, 30)
    masks = [_square(shape, 0, 0, 10), _square(shape, 20, 20, 2), _square(shape, 12, 12, 5)]
    labels = masks_to_labels([_record(m) for m in masks], min_size=5)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert (labels[20:22, 20:22] == 0).all()
    # Covered by a later, smaller mask: only the visible part counts.
    under = _square(shape, 0, 0, 3)
    over = _square(shape, 0, 0, 2)
    labels = masks_to_labels([_record(under), _record(over)], min_size=6)
    assert labels.max() == 0  # 9 - 4 = 5 visible pixels of the larger one, 4 of the smaller


def test_fill_holes_only_into_background():
    ring = _square((12, 12), 1, 1, 9)
    ring[3:8, 3:8] = False
    inner = _square((12, 12), 4, 4, 2)
    labels = masks_to_labels([_record(ring), _record(inner)], fill_holes=True)
    ring_id, inner_id = labels[1, 1], labels[4, 4]
    assert ring_id != inner_id
    assert (labels[3:8, 3:8][~inner[3:8, 3:8]] == ring_id).all()
    assert (labels[inner] == inner_id).all()
    plain = masks_to_labels([_record(ring), _record(inner)])
    assert (plain[3:8, 3:8] == 0).sum() == 25 - 4


def test_every_record_form_gives_the_same_labels():
    shape = (15, 18)
    masks = [_square(shape, 2, 3, 6), _square(shape, 8, 10, 4)]
    expected = masks_to_labels([_record(m) for m in masks])
    rles = [{"segmentation": mask_to_rle(m), "predicted_iou": 0.9} for m in masks]
    np.testing.assert_array_equal(masks_to_labels(rles), expected)
    packed = [PackedMask.from_mask(m) for m in masks]
    np.testing.assert_array_equal(masks_to_labels(packed), expected)


def test_empty_input():
    assert masks_to_labels([], shape=(4, 5)).shape == (4, 5)
    with pytest.raises(ValueError, match="shape"):
        masks_to_labels([])
    with pytest.raises(ValueError, match="order"):
        masks_to_labels([], shape=(2, 2), order="random")
    with pytest.raises(TypeError, match="record dicts"):
        masks_to_labels([np.zeros((3, 3))])
    with pytest.raises(ValueError, match="expected"):
        masks_to_labels([_record(np.ones((3, 3), bool))], shape=(4, 4))


def test_relabel_sequential():
    labels = np.array([[0, 5, 5], [9, 9, 2]])
    np.testing.assert_array_equal(relabel_sequential(labels), [[0, 2, 2], [3, 3, 1]])
    np.testing.assert_array_equal(relabel_sequential(labels, min_size=2), [[0, 1, 1], [2, 2, 0]])


def test_no_records_give_zeros_of_the_image_shape():
    for shape in [(4, 5), (4, 5, 3), np.zeros((4, 5, 3)).shape]:
        labels = masks_to_labels([], shape=shape)
        assert labels.shape == (4, 5) and labels.dtype == np.int32 and not labels.any()
    for shape in [(4,), (4, 5, 3, 2), (0, 5), (4.5, 5), (np.nan, 5), 7]:
        with pytest.raises(ValueError, match="shape"):
            masks_to_labels([], shape=shape)


@pytest.mark.parametrize(
    "rle, message",
    [
        ({"size": [3, 3], "counts": [2, 3]}, "add up to H \\* W = 9"),
        ({"size": [3, 3], "counts": [10, -1]}, ">= 0"),
        ({"size": [3, 3], "counts": [4.5, 4.5]}, "whole numbers"),
        ({"size": [3, 3], "counts": None}, "'counts' must be"),
        ({"size": [3, -3], "counts": [9]}, "'size' must be"),
        ({"size": [3], "counts": [9]}, "'size' must be"),
        ({"counts": [9]}, "'size' must be"),
    ],
)
def test_malformed_rle_is_named(rle, message):
    good = {"segmentation": mask_to_rle(np.eye(3, dtype=bool))}
    with pytest.raises(ValueError, match=f"records\\[1\\]: .*{message}"):
        masks_to_labels([good, {"segmentation": rle}])


def test_min_size_must_be_a_whole_number():
    for bad in (np.nan, -1, 2.5, "3"):
        with pytest.raises(ValueError, match="min_size"):
            masks_to_labels([], shape=(2, 2), min_size=bad)
