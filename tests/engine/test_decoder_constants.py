"""The decoder's per-image constants (dense PE, first-block projections) change no result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golden_cases import ATOL_IOU, ATOL_LOW_RES_STORED_EMBEDDING, case_files

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def embeddings(golden_dir):
    out = []
    for path in case_files()[:2]:
        with np.load(path) as z:
            out.append((torch.as_tensor(z["image_embedding"]), tuple(z["original_size"])))
    return out


def decode_without_constants(predictor, coords, labels, boxes, multimask):
    """The decoder as the model alone runs it: every projection recomputed."""
    model = predictor.model
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(
            points=None if coords is None else (coords, labels), boxes=boxes, masks=None
        )
        return model.mask_decoder(
            predictor.features, model.prompt_encoder.get_dense_pe(), sparse, dense, multimask
        )


@pytest.mark.parametrize("multimask", [True, False])
def test_constants_give_the_same_outputs(golden_model, embeddings, multimask):
    from napari_mobilesam.engine.predictor import SamPredictor

    embedding, size = embeddings[0]
    predictor = SamPredictor(golden_model)
    predictor.set_image_embedding(embedding, size)
    gen = torch.Generator().manual_seed(0)
    coords = torch.rand(5, 2, 2, generator=gen) * 1000  # 5 prompts of 2 points, batched
    labels = torch.tensor([[1, 0]] * 5)
    boxes = torch.tensor([[100.0, 120.0, 600.0, 700.0]] * 5)
    for c, lab, b in ((coords, labels, None), (None, None, boxes), (coords, labels, boxes)):
        _, iou, low_res = predictor.predict_torch(c, lab, b, multimask_output=multimask)
        ref_low_res, ref_iou = decode_without_constants(predictor, c, lab, b, multimask)
        torch.testing.assert_close(iou, ref_iou, rtol=0, atol=ATOL_IOU)
        # Not bitwise: the projections run on 1 instead of B copies of the image tokens, so
        # oneDNN may sum in another order (measured up to 1.4e-5 on logits of about 20).
        torch.testing.assert_close(low_res, ref_low_res, rtol=0, atol=ATOL_LOW_RES_STORED_EMBEDDING)


def test_constants_follow_the_image(golden_model, embeddings):
    """A new embedding, even one assigned to ``features`` directly (as micro-sam does), gets
    its own constants."""
    from napari_mobilesam.engine.predictor import SamPredictor

    (first, size), (second, _) = embeddings
    point, label = np.array([[200.0, 150.0]]), np.array([1])
    predictor = SamPredictor(golden_model)
    predictor.set_image_embedding(first, size)
    predictor.predict(point_coords=point, point_labels=label)
    predictor.features = second.clone()
    _, iou, low_res = predictor.predict(point_coords=point, point_labels=label)

    fresh = SamPredictor(golden_model)
    fresh.set_image_embedding(second, size)
    _, ref_iou, ref_low_res = fresh.predict(point_coords=point, point_labels=label)
    np.testing.assert_array_equal(iou, ref_iou)
    np.testing.assert_array_equal(low_res, ref_low_res)


@pytest.mark.parametrize("fast", [True, False])
def test_forward_kept_gives_the_kept_prompts_masks(golden_model, embeddings, fast):
    """Prompts dropped by their predicted IoUs skip the upscaling; the kept ones' masks and
    every prompt's IoUs are those of the full call."""
    from napari_mobilesam.engine.predictor import SamPredictor

    embedding, size = embeddings[0]
    predictor = SamPredictor(golden_model)
    predictor.set_image_embedding(embedding, size)
    model = predictor.model
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(6, 1, 2, generator=gen) * 1000
    labels = torch.ones(6, 1, dtype=torch.int)
    decoder = model.mask_decoder
    was_fast = decoder.fast_path
    decoder.fast_path = fast
    try:
        with torch.inference_mode():
            sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            image_pe, constants = predictor._decoder_constants()
            args = (predictor.features, image_pe, sparse, dense, True)
            ref_masks, ref_iou = decoder(*args, image_constants=constants)
            # Keep the prompts whose best IoU is above the median: some of each kind.
            cut = ref_iou.max(dim=1).values.median()
            for keep, expected in (
                (lambda iou: iou.max(dim=1).values > cut, None),
                (lambda iou: torch.zeros(iou.shape[0], dtype=torch.bool), 0),
                (lambda iou: torch.ones(iou.shape[0], dtype=torch.bool), 6),
            ):
                masks, iou, kept = decoder.forward_kept(*args, keep, image_constants=constants)
                torch.testing.assert_close(iou, ref_iou, rtol=0, atol=ATOL_IOU)
                assert kept.tolist() == keep(ref_iou).nonzero().flatten().tolist()
                if expected is not None:
                    assert kept.numel() == expected
                else:
                    assert 0 < kept.numel() < 6
                assert masks.shape == (kept.numel(), 3, 256, 256)
                torch.testing.assert_close(
                    masks, ref_masks[kept], rtol=0, atol=ATOL_LOW_RES_STORED_EMBEDDING
                )
    finally:
        decoder.fast_path = was_fast


def test_the_same_embedding_set_again_keeps_its_constants(golden_model, embeddings):
    """A cache hit sets the same embedding tensor again: its constants are kept (identity),
    a different tensor gets its own, and the masks are those of a fresh predictor."""
    from napari_mobilesam.engine.predictor import SamPredictor

    (embedding, size), (other, other_size) = embeddings
    predictor = SamPredictor(golden_model)
    point = dict(point_coords=np.array([[50.0, 40.0]]), point_labels=np.array([1]))
    predictor.set_image_embedding(embedding, size)
    predictor.predict(**point)
    kept = predictor._image_constants
    predictor.set_image_embedding(embedding, size)
    assert predictor._image_constants is kept
    masks, scores, _ = predictor.predict(**point)
    predictor.set_image_embedding(other, other_size)
    assert predictor._image_constants is None
    predictor.predict(**point)
    assert predictor._image_constants[0] is predictor.features
    fresh = SamPredictor(golden_model)
    fresh.set_image_embedding(embedding.clone(), size)
    fresh_masks, fresh_scores, _ = fresh.predict(**point)
    np.testing.assert_array_equal(masks, fresh_masks)
    np.testing.assert_array_equal(scores, fresh_scores)
