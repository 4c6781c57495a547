"""Boolean masks upscaled around their positive logits equal the full upscaling bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mobilesam.engine import mask_upscaling
from napari_mobilesam.engine.mask_records import PackedMask
from napari_mobilesam.engine.mask_upscaling import binary_crops, binary_masks
from napari_mobilesam.engine.transforms import ResizeLongestSide
from napari_mobilesam.model.build import build_mobile_sam

# (H, W) of the user's image: longer side 1024 (one step), smaller (the second resize
# enlarges), larger (it shrinks), non-square both ways, and slivers.
SIZES = [(1024, 1024), (1024, 700), (700, 1024), (333, 250), (512, 512), (2048, 1536), (37, 53)]
SIZES += [(1000, 3), (5, 1024)]


@pytest.fixture(scope="module")
def model():
    return build_mobile_sam(None)


def _logits(seed: int) -> torch.Tensor:
    """(8, 256, 256) logits: blobs of radius 0-20 on a negative background (some touching the
    frame's edges and corners), an empty mask, a noisy mask and lone positive pixels."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(8, 256, 256, generator=g) - 8
    yy, xx = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    centres = [(128, 128), (0, 0), (255, 255), (3, 200), (200, 254)]
    for k, (cy, cx) in enumerate(centres):
        radius = [0, 1, 4, 9, 20][k]
        low[k] += 16 * (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2)
    low[5] = -torch.rand(256, 256, generator=g)  # nothing positive
    low[6] = torch.randn(256, 256, generator=g) * 3  # positive everywhere: the full path
    low[7, int(torch.randint(0, 256, (1,), generator=g)), 17] = 0.5  # one positive pixel
    return low


@pytest.mark.parametrize("size", SIZES)
def test_binary_masks_equal_the_full_upscaling(model, size):
    input_size = ResizeLongestSide(1024).get_preprocess_shape(*size, 1024)
    for seed in range(3):
        low = _logits(seed)[:, None]
        expected = model.postprocess_masks(low, input_size, size) > 0
        got = binary_masks(low, input_size, size, model.postprocess_masks)
        assert got.shape == expected.shape
        assert torch.equal(got, expected), f"{size}, seed {seed}"


@pytest.mark.parametrize("size", [(1024, 1024), (333, 250), (2048, 1536)])
def test_crops_pack_as_the_full_masks(model, size):
    input_size = ResizeLongestSide(1024).get_preprocess_shape(*size, 1024)
    low = _logits(7)
    full = (model.postprocess_masks(low[:, None], input_size, size)[:, 0] > 0).numpy()
    crops = binary_crops(low, input_size, size, model.postprocess_masks)
    for mask, (crop, at) in zip(full, crops, strict=True):
        packed = PackedMask.from_mask(crop.numpy(), at, size)
        reference = PackedMask.from_mask(mask)
        assert packed.box == reference.box and packed.area == reference.area
        assert np.array_equal(packed.bits, reference.bits)
        assert np.array_equal(packed.to_mask(), mask)


def test_small_masks_are_cropped(model):
    """The crop path is taken (not only the full one): a radius-4 blob gives a crop of about
    its size, placed where it is."""
    low = _logits(0)[2:3]  # the blob at the bottom-right corner
    ((crop, (row, col)),) = binary_crops(low, (1024, 1024), (1024, 1024), model.postprocess_masks)
    assert crop.shape[0] < 64 and crop.shape[1] < 64
    assert row + crop.shape[0] == 1024 and col + crop.shape[1] == 1024
    assert crop.any()


def test_nan_rows_keep_their_positive_pixels(model):
    low = torch.full((1, 1, 256, 256), -5.0)
    low[0, 0, 40, 30:34] = 3.0
    low[0, 0, 40, 90] = float("nan")
    expected = model.postprocess_masks(low, (1024, 1024), (1024, 1024)) > 0
    got = binary_masks(low, (1024, 1024), (1024, 1024), model.postprocess_masks)
    assert expected.any() and torch.equal(got, expected)


def test_predict_masks_equal_their_low_res_upscaled(model, monkeypatch):
    """The predictor's boolean masks through the crops (every non-empty mask cropped, however
    wide) equal the full upscaling of its own low-res logits, on a non-square image."""
    from napari_mobilesam.engine.predictor import SamPredictor

    monkeypatch.setattr(mask_upscaling, "MAX_BOX_SHARE", 2.0)
    rng = np.random.default_rng(3)
    predictor = SamPredictor(model)
    predictor.set_image(rng.integers(0, 255, (300, 410, 3), dtype=np.uint8))
    masks, _, low_res = predictor.predict(
        point_coords=np.array([[100.0, 80.0], [300.0, 200.0]]),
        point_labels=np.array([1, 0]),
        multimask_output=True,
    )
    expected = predictor.model.postprocess_masks(
        torch.as_tensor(low_res)[None], predictor.input_size, predictor.original_size
    )
    assert np.array_equal(masks, (expected[0] > 0).numpy())


def test_other_thresholds_take_the_full_path(model):
    """The crops are exact for threshold 0 only: another threshold gives the full
    upscaling's masks, whole."""
    low = _logits(1)
    size = (333, 250)
    input_size = ResizeLongestSide(1024).get_preprocess_shape(*size, 1024)
    expected = model.postprocess_masks(low[:, None], input_size, size) > 0.5
    got = binary_masks(low[:, None], input_size, size, model.postprocess_masks, 0.5)
    assert torch.equal(got, expected)
    crops = binary_crops(low, input_size, size, model.postprocess_masks, 0.5)
    for (crop, at), mask in zip(crops, expected[:, 0], strict=True):
        assert at == (0, 0) and torch.equal(crop, mask)
