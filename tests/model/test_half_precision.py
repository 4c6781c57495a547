"""The half-precision encoder path (the CUDA default) against the float32 golden vectors.

float16 cannot meet the float32 tolerances (the embedding alone moves by about 1e-2), so this
path has its own documented bound, checked here on the CPU's float16 autocast. The measured
worst cases on the public vectors were: embedding 1.4e-2, low-res logits 3.3e-2, predicted IoU
4e-4, mask IoU 0.998. The bounds below leave about 2x headroom, no more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golden_cases import case_files, prompt_set

pytestmark = pytest.mark.golden

HALF_ATOL_EMBEDDING = 0.03
HALF_ATOL_LOW_RES = 0.07
HALF_ATOL_IOU = 2e-3
HALF_MIN_MASK_IOU = 0.995


@pytest.fixture(scope="module")
def half_model(synthetic_checkpoint):
    from napari_mobilesam import build_mobile_sam

    model = build_mobile_sam(synthetic_checkpoint, device="cpu", half=True)
    assert model.encoder_dtype == torch.float16
    return model


def test_half_is_not_chosen_on_cpu_by_default(synthetic_checkpoint):
    from napari_mobilesam import build_mobile_sam

    assert build_mobile_sam(synthetic_checkpoint, device="cpu").encoder_dtype is None


@pytest.mark.parametrize("name", [p.name for p in case_files()] or ["<none>"])
def test_half_encoder_within_documented_bound(name, golden_dir, half_model):
    from napari_mobilesam import SamPredictor

    with np.load(golden_dir / "cases" / name) as f:
        z = {k: f[k] for k in f.files}
    predictor = SamPredictor(half_model)
    predictor.set_image(z["image"])
    embedding = predictor.get_image_embedding()
    assert embedding.dtype == torch.float32
    np.testing.assert_allclose(embedding.numpy(), z["image_embedding"], atol=HALF_ATOL_EMBEDDING)
    for k in range(int(z["num_prompt_sets"])):
        p = prompt_set(z, k)
        if p["batched"]:
            continue
        masks, iou, low = predictor.predict(
            p["point_coords"], p["point_labels"], p["box"], p["mask_input"], bool(p["multimask"])
        )
        np.testing.assert_allclose(low, p["low_res"], atol=HALF_ATOL_LOW_RES)
        np.testing.assert_allclose(iou, p["iou"], atol=HALF_ATOL_IOU)
        inter = (masks & p["masks"]).sum(axis=(1, 2))
        union = (masks | p["masks"]).sum(axis=(1, 2))
        assert (inter / union).min() >= HALF_MIN_MASK_IOU, (k, inter / union)
