"""Labels as prompts: box (+ mask as logits) per label, exact against one-at-a-time calls."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from many_objects_helpers import assert_same_as_single, blob_image

from napari_mobilesam.engine.mask_prompts import mask_to_logits
from napari_mobilesam.engine.refine import (
    RefineCancelled,
    label_boxes,
    plane_prompts,
    refine_labels,
    refine_labels_steps,
)
from napari_mobilesam.engine.steps import drive


def source_labels() -> np.ndarray:
    labels = np.zeros((72, 120), dtype=np.uint16)
    labels[10:27, 17:34] = 7  # a square on a disc
    labels[42:60, 70:91] = 3
    labels[0:6, 110:120] = 9  # touches the top and right border
    labels[66, 5] = 11  # one pixel
    return labels


@pytest.fixture(scope="module")
def predictor(golden_model):
    from napari_mobilesam import SamPredictor

    return SamPredictor(golden_model)


def test_label_boxes_are_inclusive_xyxy():
    ids, boxes, compact = label_boxes(source_labels())
    assert ids.tolist() == [3, 7, 9, 11]
    np.testing.assert_array_equal(boxes[1], [17, 10, 33, 26])
    np.testing.assert_array_equal(boxes[2], [110, 0, 119, 5])
    np.testing.assert_array_equal(boxes[3], [5, 66, 5, 66])  # one pixel, one-pixel box
    assert compact.max() == 4 and (compact[source_labels() == 0] == 0).all()


def test_mask_logits_upscale_back_to_the_mask(golden_model, predictor):
    """The conversion's round trip: SAM's own upscaling of the logits gives the mask back."""
    predictor.set_image(blob_image())
    labels = source_labels()
    for label in (3, 7, 9):
        mask = labels == label
        logits = mask_to_logits(mask[None], predictor.input_size)
        assert logits.shape == (1, 1, 256, 256) and logits.dtype == np.float32
        assert logits.max() <= 7.0 and logits.min() >= -7.0
        back = golden_model.postprocess_masks(
            torch.from_numpy(logits), predictor.input_size, predictor.original_size
        )[0, 0].numpy()
        np.testing.assert_array_equal(back > 0, mask)


def test_refined_objects_equal_single_calls_with_and_without_the_mask(predictor):
    image, labels = blob_image(), source_labels()
    predictor.set_image(image)
    for mask_prompt in (True, False):
        ids, prompts = plane_prompts(labels, predictor.input_size, mask_prompt)
        refined = refine_labels(image, labels, predictor, mask_prompt=mask_prompt)
        assert set(np.unique(refined)) <= {0, 3, 7, 9, 11}
        predictor.set_image(image)
        from napari_mobilesam.engine.point_objects import decode_objects

        decoded = decode_objects(predictor, prompts, multimask_output=False, batch_size=3)
        for i, prompt in enumerate(prompts):
            kwargs = prompt.predict_kwargs()
            assert (kwargs["mask_input"] is not None) == mask_prompt
            assert_same_as_single(predictor, decoded.mask(i), decoded.scores[i], kwargs, False)
        # The result is the decoded masks by the overlap rule, with the source ids.
        expected = np.concatenate([[0], ids])[decoded.labels()]
        np.testing.assert_array_equal(refined, expected)


def test_the_mask_prompt_changes_the_result(predictor):
    """What mask_input changes: the same boxes give other masks once each label's own mask
    is added (here, with random weights, a different set of pixels for every object)."""
    image, labels = blob_image(), source_labels()
    with_mask = refine_labels(image, labels, predictor, mask_prompt=True)
    box_only = refine_labels(image, labels, predictor, mask_prompt=False)
    assert (with_mask != box_only).any()


def test_source_is_not_modified_and_new_ids_renumber(predictor):
    image, labels = blob_image(), source_labels()
    before = labels.copy()
    kept = refine_labels(image, labels, predictor, mask_prompt=False)
    new = refine_labels(image, labels, predictor, mask_prompt=False, new_ids=True)
    np.testing.assert_array_equal(labels, before)
    assert kept.dtype == labels.dtype and new.dtype == np.int32
    old_ids = [i for i in np.unique(kept) if i]
    np.testing.assert_array_equal(np.unique(new)[1:], np.arange(1, len(old_ids) + 1))
    for rank, old in enumerate(old_ids, start=1):
        np.testing.assert_array_equal(new == rank, kept == old)


def test_stack_refines_chosen_planes_and_keeps_ids_across_planes(predictor):
    image = np.stack([blob_image(seed=s)[..., 0] for s in range(3)])
    labels = np.stack([source_labels()] * 3)
    labels[1] = 0  # an empty plane stays empty and is not encoded
    steps = refine_labels_steps(image, labels, predictor, planes=[0, 1], mask_prompt=False)
    seen = []
    result = drive(steps, seen.append)
    assert (result.labels[1:] == 0).all() and result.labels[0].any()
    assert {p.plane for p in seen} == {0} and seen[-1].fraction == 1.0
    assert set(np.unique(result.labels[0])) <= {0, 3, 7, 9, 11}


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros((72, 120), np.uint8), "no label"),
        (np.ones((72, 121), np.uint8), "grid"),
        (np.ones((72, 120), np.float32), "integer"),
        (-np.ones((72, 120), np.int32), "negative"),
    ],
)
def test_bad_labels_are_refused_by_name(predictor, labels, match):
    with pytest.raises(ValueError, match=match):
        refine_labels(blob_image(), labels, predictor)


def test_cancel_returns_nothing(predictor):
    stop = threading.Event()
    stop.set()
    with pytest.raises(RefineCancelled):
        refine_labels(blob_image(), source_labels(), predictor, cancel=stop)


def test_a_predictor_stand_in_is_decoded_one_object_at_a_time():
    """Objects without SamPredictor's internals go through predict, one call each."""
    from fakes import ThresholdPredictor

    image = np.zeros((40, 60), np.uint8)
    image[5:15, 5:15] = 255
    image[20:35, 30:50] = 255
    rough = np.zeros((40, 60), np.int32)
    rough[7:12, 6:13] = 3  # a rough, too small painting of each blob
    rough[25:30, 35:45] = 8
    stand_in = ThresholdPredictor()
    refined = refine_labels(image, rough, stand_in)
    assert stand_in.calls == 2
    np.testing.assert_array_equal(refined == 3, np.pad(np.ones((10, 10), bool), ((5, 25), (5, 45))))
    assert (refined[20:35, 30:50] == 8).all()
