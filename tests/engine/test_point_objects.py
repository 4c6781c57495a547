"""One object per point, decoded in batches: each object equals its one-at-a-time call."""

from __future__ import annotations

import numpy as np
import pytest
from many_objects_helpers import assert_same_as_single, blob_image

from napari_mobilesam.engine import mask_upscaling
from napari_mobilesam.engine.mask_records import PackedMask
from napari_mobilesam.engine.point_objects import (
    ObjectPrompt,
    decode_objects,
    each_point_prompts,
    resolve_overlaps,
)


@pytest.fixture(scope="module")
def predictor(golden_model):
    from napari_mobilesam import SamPredictor

    predictor = SamPredictor(golden_model)
    predictor.set_image(blob_image())  # 72 x 120: not square
    return predictor


def test_each_point_rule_adds_every_negative_to_every_object():
    prompts = each_point_prompts([[1, 2], [3, 4], [5, 6], [7, 8]], [1, 0, 1, 0])
    assert len(prompts) == 2
    np.testing.assert_array_equal(prompts[0].point_coords, [[1, 2], [3, 4], [7, 8]])
    np.testing.assert_array_equal(prompts[0].point_labels, [1, 0, 0])
    np.testing.assert_array_equal(prompts[1].point_coords, [[5, 6], [3, 4], [7, 8]])
    assert each_point_prompts([[1, 2]], [0]) == []


def test_each_point_refuses_fractional_labels_and_bad_shapes():
    with pytest.raises(ValueError, match="point_labels"):
        each_point_prompts([[1, 2]], [0.5])
    with pytest.raises(ValueError, match="point_coords"):
        each_point_prompts([[1, 2, 3]])


@pytest.mark.parametrize("cropped", [False, True], ids=["as-is", "every-mask-cropped"])
@pytest.mark.parametrize("multimask", [True, False])
def test_batched_points_equal_single_calls(predictor, multimask, cropped, monkeypatch):
    if cropped:  # every mask through the crop around its positive logits, however wide
        monkeypatch.setattr(mask_upscaling, "MAX_BOX_SHARE", 2.0)
    rng = np.random.default_rng(1)
    points = np.vstack([rng.uniform([0, 0], [120, 72], (11, 2)), [[3.0, 3.0], [60.0, 40.0]]])
    labels = np.r_[np.ones(11), [0, 0]]
    prompts = each_point_prompts(points, labels)
    # batch_size 4 splits the 11 objects into batches of 4, 4 and 3
    decoded = decode_objects(predictor, prompts, multimask_output=multimask, batch_size=4)
    assert len(decoded) == 11 and decoded.shape == (72, 120)
    for i, prompt in enumerate(prompts):
        assert_same_as_single(
            predictor, decoded.mask(i), decoded.scores[i], prompt.predict_kwargs(), multimask
        )


def test_mixed_prompts_are_batched_by_kind_and_keep_their_order(predictor):
    prompts = [
        ObjectPrompt(box=np.array([10.0, 5.0, 40.0, 30.0])),
        ObjectPrompt(point_coords=np.array([[50.0, 50.0]]), point_labels=np.array([1])),
        ObjectPrompt(
            point_coords=np.array([[90.0, 20.0]]),
            point_labels=np.array([1]),
            box=np.array([80.0, 10.0, 110.0, 30.0]),
        ),
        ObjectPrompt(box=np.array([60.0, 40.0, 100.0, 70.0])),
    ]
    decoded = decode_objects(predictor, prompts, multimask_output=False, batch_size=8)
    for i, prompt in enumerate(prompts):
        assert_same_as_single(
            predictor, decoded.mask(i), decoded.scores[i], prompt.predict_kwargs(), False
        )


def test_overlap_rule_higher_score_keeps_the_pixel():
    a = np.zeros((4, 5), bool)
    a[:, :3] = True
    b = np.zeros((4, 5), bool)
    b[:, 2:] = True
    labels = resolve_overlaps([PackedMask.from_mask(a), b], [0.5, 0.9], (4, 5))
    assert (labels[:, 2] == 2).all() and (labels[:, :2] == 1).all()
    labels = resolve_overlaps([a, b], [0.9, 0.5], (4, 5))
    assert (labels[:, 2] == 1).all()
    labels = resolve_overlaps([a, b], [0.7, 0.7], (4, 5))  # a tie: the earlier object
    assert (labels[:, 2] == 1).all() and (labels[:, 3:] == 2).all()


def test_too_many_objects_are_refused_before_decoding(predictor):
    prompts = each_point_prompts(np.full((12, 2), 10.0))
    with pytest.raises(ValueError, match="max_objects=10"):
        decode_objects(predictor, prompts, max_objects=10)


def test_points_far_outside_are_refused_like_single_calls(predictor):
    prompts = each_point_prompts([[10.0, 10.0], [5000.0, 10.0]])
    with pytest.raises(ValueError, match="far outside"):
        decode_objects(predictor, prompts)
