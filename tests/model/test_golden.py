"""The model against vectors produced by the original MobileSAM (../shared/golden).

Matching these within the README's tolerances is what makes the official mobile_sam.pt work.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golden_cases import (
    ATOL_EMBEDDING,
    ATOL_IOU,
    ATOL_LOW_RES_END_TO_END,
    ATOL_LOW_RES_STORED_EMBEDDING,
    ATOL_SPARSE,
    GOLDEN_DIR,
    assert_masks_match,
    case_files,
    prompt_set,
    prompt_set_ids,
)
from runtime_helpers import ENGINE_RUNTIMES, runtime_model

pytestmark = pytest.mark.golden

CASES = [p.name for p in case_files()] or ["<no golden cases>"]
PROMPT_SETS = prompt_set_ids() or [("<no golden cases>", 0)]


@pytest.fixture(scope="module", params=["default", "eager", *ENGINE_RUNTIMES])
def model(request, synthetic_checkpoint, tmp_path_factory):
    """Every model path users can get: the default (optimised) one, the plain eager one, and the
    default one with its encoder on each engine runtime (skipped where it is not installed)."""
    from napari_mobilesam import build_mobile_sam

    if request.param in ENGINE_RUNTIMES:
        return runtime_model(synthetic_checkpoint, request.param, tmp_path_factory)
    return build_mobile_sam(synthetic_checkpoint, device="cpu", optimize=request.param == "default")


@pytest.fixture(scope="module")
def encoded(model, case_data):
    """One predictor per case with its own embedding from the raw image (encoded once)."""
    from napari_mobilesam import SamPredictor

    cache: dict[str, SamPredictor] = {}

    def get(name: str) -> SamPredictor:
        if name not in cache:
            predictor = SamPredictor(model)
            predictor.set_image(case_data(name)["image"])
            cache[name] = predictor
        return cache[name]

    return get


@pytest.mark.parametrize("name", CASES)
def test_resize_matches_reference(name, case_data):
    from napari_mobilesam import ResizeLongestSide

    z = case_data(name)
    resized = ResizeLongestSide(1024).apply_image(z["image"])
    assert tuple(resized.shape[:2]) == tuple(z["input_size"])
    assert np.array_equal(resized, z["input_image"])


@pytest.mark.parametrize("name", CASES)
def test_encoder_end_to_end(name, case_data, encoded):
    z = case_data(name)
    predictor = encoded(name)
    assert predictor.original_size == tuple(z["original_size"])
    assert predictor.input_size == tuple(z["input_size"])
    embedding = predictor.get_image_embedding().cpu().numpy()
    assert embedding.shape == (1, 256, 64, 64) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, z["image_embedding"], rtol=0, atol=ATOL_EMBEDDING)


def _run(predictor, p: dict, model) -> dict[str, np.ndarray]:
    """Run one prompt set the way the reference did; returns sparse, masks, iou, low_res."""
    t = predictor.transform
    size = predictor.original_size
    if p["batched"]:
        coords = labels = boxes = None
        if p["point_coords"] is not None:
            coords = t.apply_coords_torch(torch.as_tensor(p["point_coords"]).float(), size)
            labels = torch.as_tensor(p["point_labels"])
            np.testing.assert_allclose(coords.numpy(), p["point_coords_model"], rtol=0, atol=1e-4)
        if p["boxes"] is not None:
            boxes = t.apply_boxes_torch(torch.as_tensor(p["boxes"]).float(), size)
            np.testing.assert_allclose(boxes.numpy(), p["boxes_model"], rtol=0, atol=1e-4)
        with torch.inference_mode():
            sparse, _ = model.prompt_encoder(
                points=None if coords is None else (coords, labels), boxes=boxes, masks=None
            )
        masks, iou, low_res = predictor.predict_torch(
            coords, labels, boxes, multimask_output=bool(p["multimask"])
        )
        return {
            "sparse": sparse.numpy(),
            "masks": masks.numpy(),
            "iou": iou.numpy(),
            "low_res": low_res.numpy(),
        }

    masks, iou, low_res = predictor.predict(
        point_coords=p["point_coords"],
        point_labels=p["point_labels"],
        box=p["box"],
        mask_input=p["mask_input"],
        multimask_output=bool(p["multimask"]),
    )
    # The sparse embedding the predictor fed the decoder, recomputed from the same transform.
    points = boxes = None
    if p["point_coords"] is not None:
        coords = t.apply_coords(p["point_coords"], size).astype(np.float32)
        np.testing.assert_allclose(coords, p["point_coords_model"], rtol=0, atol=1e-4)
        points = (torch.as_tensor(coords)[None], torch.as_tensor(p["point_labels"])[None])
    if p["box"] is not None:
        box = t.apply_boxes(p["box"], size).astype(np.float32)
        np.testing.assert_allclose(box.reshape(-1), p["box_model"].reshape(-1), rtol=0, atol=1e-4)
        boxes = torch.as_tensor(box)[None]
    with torch.inference_mode():
        sparse, _ = model.prompt_encoder(points=points, boxes=boxes, masks=None)
    return {"sparse": sparse.numpy(), "masks": masks, "iou": iou, "low_res": low_res}


@pytest.mark.parametrize(("name", "k"), PROMPT_SETS)
def test_prompt_set_end_to_end(name, k, case_data, encoded, model):
    p = prompt_set(case_data(name), k)
    out = _run(encoded(name), p, model)
    assert out["masks"].shape == p["masks"].shape
    assert out["iou"].shape == p["iou"].shape
    np.testing.assert_allclose(out["sparse"], p["sparse_embeddings"], rtol=0, atol=ATOL_SPARSE)
    np.testing.assert_allclose(out["iou"], p["iou"], rtol=0, atol=ATOL_IOU)
    np.testing.assert_allclose(out["low_res"], p["low_res"], rtol=0, atol=ATOL_LOW_RES_END_TO_END)
    assert_masks_match(out["masks"], p["masks"], p["borderline"])


@pytest.mark.parametrize(("name", "k"), PROMPT_SETS)
def test_prompt_set_from_stored_embedding(name, k, case_data, model):
    """The decoder alone, fed the reference embedding: the tighter low-res tolerance applies."""
    from napari_mobilesam import SamPredictor

    z = case_data(name)
    predictor = SamPredictor(model)
    predictor.set_image_embedding(torch.as_tensor(z["image_embedding"]), tuple(z["original_size"]))
    assert predictor.input_size == tuple(z["input_size"])
    p = prompt_set(z, k)
    out = _run(predictor, p, model)
    np.testing.assert_allclose(out["iou"], p["iou"], rtol=0, atol=ATOL_IOU)
    np.testing.assert_allclose(
        out["low_res"], p["low_res"], rtol=0, atol=ATOL_LOW_RES_STORED_EMBEDDING
    )
    assert_masks_match(out["masks"], p["masks"], p["borderline"])


def test_golden_folder_has_public_cases(golden_dir):
    """Guards against the parametrisation silently collecting nothing."""
    assert golden_dir == GOLDEN_DIR
    assert len(case_files()) >= 2
