"""SamPredictor's interface: shapes, dtypes, conversions and the messages for misuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mobilesam import SamPredictor, build_mobile_sam

H, W = 120, 90


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def predictor(image):
    torch.manual_seed(0)
    p = SamPredictor(build_mobile_sam(None, device="cpu"))
    p.set_image(image)
    return p


def test_attributes_after_set_image(predictor):
    assert predictor.is_image_set
    assert predictor.original_size == (H, W)
    assert predictor.input_size == (1024, 768)
    assert predictor.features.shape == (1, 256, 64, 64)
    assert predictor.get_image_embedding() is predictor.features
    assert predictor.device == torch.device("cpu")
    assert isinstance(predictor.model, torch.nn.Module)


@pytest.mark.parametrize(("multimask", "c"), [(True, 3), (False, 1)])
def test_predict_shapes_and_dtypes(predictor, multimask, c):
    masks, iou, low_res = predictor.predict(
        point_coords=np.array([[40.0, 60.0]]), point_labels=np.array([1]),
        multimask_output=multimask,
    )  # fmt: skip
    assert masks.shape == (c, H, W) and masks.dtype == np.bool_
    assert iou.shape == (c,) and iou.dtype == np.float32
    assert low_res.shape == (c, 256, 256) and low_res.dtype == np.float32


def test_return_logits_thresholds_to_masks(predictor):
    kwargs = dict(box=np.array([10, 20, 70, 100]), multimask_output=False)
    masks, _, _ = predictor.predict(**kwargs)
    logits, _, _ = predictor.predict(return_logits=True, **kwargs)
    assert logits.dtype == np.float32
    assert np.array_equal(logits > 0.0, masks)


def test_every_prompt_combination_runs(predictor):
    pts, lab = np.array([[30.0, 40.0], [50.0, 80.0]]), np.array([1, 0])
    box = np.array([5.0, 5.0, 80.0, 110.0])
    _, _, low = predictor.predict(pts, lab, multimask_output=False)
    for kwargs in [
        {},  # the original predictor accepts no prompt at all
        {"point_coords": pts[1:], "point_labels": lab[1:]},  # negative only
        {"box": box},
        {"point_coords": pts, "point_labels": lab, "box": box},
        {"mask_input": low},
        {"point_coords": pts, "point_labels": lab, "mask_input": low},
        {"box": box, "mask_input": low},
    ]:
        masks, iou, _ = predictor.predict(multimask_output=False, **kwargs)
        assert masks.shape == (1, H, W) and np.isfinite(iou).all(), kwargs


def test_batched_equals_single_predictions(predictor):
    boxes = np.array([[5, 5, 50, 60], [20, 30, 85, 115]], dtype=np.float64)
    t = predictor.transform
    masks_b, iou_b, low_b = predictor.predict_torch(
        None, None, t.apply_boxes_torch(torch.as_tensor(boxes).float(), (H, W)),
        multimask_output=False,
    )  # fmt: skip
    assert masks_b.shape == (2, 1, H, W)
    for i, box in enumerate(boxes):
        _, iou, low = predictor.predict(box=box, multimask_output=False)
        np.testing.assert_allclose(iou_b[i].numpy(), iou, atol=1e-5)
        np.testing.assert_allclose(low_b[i].numpy(), low, atol=1e-4)


def test_bgr_and_grayscale_inputs(image, predictor):
    p = SamPredictor(predictor.model)
    p.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    np.testing.assert_allclose(p.features.numpy(), predictor.features.numpy(), atol=1e-5)
    gray = image[..., 0]
    p.set_image(gray)
    q = SamPredictor(predictor.model)
    q.set_image(np.repeat(gray[..., None], 3, axis=-1))
    assert torch.equal(p.features, q.features)


def test_set_image_embedding_restores_state(predictor):
    p = SamPredictor(predictor.model)
    p.set_image_embedding(predictor.get_image_embedding(), (H, W))
    assert p.input_size == predictor.input_size and p.original_size == (H, W)
    a = p.predict(box=np.array([10, 10, 60, 60]), multimask_output=False)
    b = predictor.predict(box=np.array([10, 10, 60, 60]), multimask_output=False)
    assert np.array_equal(a[0], b[0])
    with pytest.raises(ValueError, match=r"\(1, 256, 64, 64\)"):
        p.set_image_embedding(torch.zeros(1, 256, 32, 32), (H, W))


def test_reset_image(predictor):
    p = SamPredictor(predictor.model)
    p.set_image_embedding(predictor.features, (H, W))
    p.reset_image()
    assert not p.is_image_set and p.features is None and p.original_size is None


def test_predict_before_set_image_says_what_to_call(predictor):
    p = SamPredictor(predictor.model)
    with pytest.raises(RuntimeError, match=r"set_image"):
        p.predict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1]))
    with pytest.raises(RuntimeError, match=r"set_image"):
        p.get_image_embedding()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"point_coords": np.array([[1.0, 2.0]])}, "point_labels must be given"),
        ({"point_labels": np.array([1])}, "without point_coords"),
        ({"point_coords": np.array([1.0, 2.0, 3.0]), "point_labels": [1]}, r"\(N, 2\)"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": [1, 0]}, "to match"),
        ({"point_coords": np.array([[np.nan, 2.0]]), "point_labels": [1]}, "NaN"),
        ({"box": np.array([1.0, 2.0, 3.0])}, r"box must be \(4,\)"),
        ({"box": np.array([1.0, 2.0, np.inf, 4.0])}, "NaN or infinite"),
        ({"mask_input": np.zeros((256, 256))}, r"\(1, 256, 256\)"),
    ],
)
def test_bad_prompts_are_explained(predictor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


def test_bad_images_are_explained(predictor):
    p = SamPredictor(predictor.model)
    with pytest.raises(ValueError, match="image_format"):
        p.set_image(np.zeros((4, 4, 3), np.uint8), image_format="HSV")
    with pytest.raises(ValueError, match="empty"):
        p.set_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="max\\(h, w\\) == 1024"):
        p.set_torch_image(torch.zeros(1, 3, 100, 100), (100, 100))
    assert not p.is_image_set


@pytest.mark.parametrize(
    "size", [(480, 640), (333, 250), (1, 1), (1, 5000), (7, 3), (999, 1001), (17, 4096)]
)
def test_postprocess_equals_full_resolution_reference(predictor, size):
    """The cropped, chunked upscaling gives exactly SAM's upsample-crop-resize result."""
    import torch.nn.functional as F

    model = predictor.model
    input_size = predictor.transform.get_preprocess_shape(*size, 1024)
    logits = torch.randn(3, 2, 256, 256, generator=torch.Generator().manual_seed(0)) * 5
    full = F.interpolate(logits, (1024, 1024), mode="bilinear", align_corners=False)
    full = full[..., : input_size[0], : input_size[1]]
    expected = F.interpolate(full, size, mode="bilinear", align_corners=False)
    got = model.postprocess_masks(logits, input_size, size, chunk=4)
    assert torch.equal(got, expected)


def test_one_pixel_high_strip(predictor):
    p = SamPredictor(predictor.model)
    p.set_image(np.zeros((1, 5000, 3), np.uint8))
    assert p.input_size == (1, 1024)
    masks, _, _ = p.predict(np.array([[10.0, 0.0]]), np.array([1]))
    assert masks.shape == (3, 1, 5000)
