"""The opt-in bf16 decoder: refused without native bf16, within its bounds where it runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golden_cases import case_files, prompt_set, prompt_set_ids
from napari_mobilesam.engine import decoder_precision
from napari_mobilesam.engine.decoder_precision import (
    BF16_IOU_ATOL,
    BF16_MIN_MASK_IOU,
    bf16_decoder_supported,
    check_decoder_precision,
)

SUPPORTED, WHY = bf16_decoder_supported("cpu")
needs_bf16 = pytest.mark.skipif(not SUPPORTED, reason=f"no native bf16 on this CPU: {WHY}")
PROMPT_SETS = prompt_set_ids() or [("<no golden cases>", 0)]


def test_fp32_is_always_accepted():
    assert check_decoder_precision("fp32", "cpu") == "fp32"


def test_unknown_precision_is_refused_by_name():
    with pytest.raises(ValueError, match="decoder_precision must be one of"):
        check_decoder_precision("fp16", "cpu")


def test_bf16_without_native_support_is_refused(monkeypatch, golden_model):
    from napari_mobilesam import SamAutomaticMaskGenerator, SamPredictor

    monkeypatch.setattr(
        decoder_precision, "bf16_decoder_supported", lambda device: (False, "no flags here")
    )
    with pytest.raises(ValueError, match=r"decoder_precision='bf16'.*no flags here.*'fp32'"):
        SamPredictor(golden_model, decoder_precision="bf16")
    with pytest.raises(ValueError, match=r"decoder_precision='bf16'"):
        SamAutomaticMaskGenerator(golden_model, points_per_side=2, decoder_precision="bf16")


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    union = (a | b).sum(axis=axes)
    return np.where(union > 0, (a & b).sum(axis=axes) / np.maximum(union, 1), 1.0)


def _predict(predictor, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """(masks, iou) of one golden prompt set, batched sets through predict_torch."""
    if not p["batched"]:
        masks, iou, _ = predictor.predict(
            point_coords=p["point_coords"],
            point_labels=p["point_labels"],
            box=p["box"],
            mask_input=p["mask_input"],
            multimask_output=bool(p["multimask"]),
        )
        return masks, iou
    t, size = predictor.transform, predictor.original_size
    coords = labels = boxes = None
    if p["point_coords"] is not None:
        coords = t.apply_coords_torch(torch.as_tensor(p["point_coords"]).float(), size)
        labels = torch.as_tensor(p["point_labels"])
    if p["boxes"] is not None:
        boxes = t.apply_boxes_torch(torch.as_tensor(p["boxes"]).float(), size)
    masks, iou, _ = predictor.predict_torch(
        coords, labels, boxes, multimask_output=bool(p["multimask"])
    )
    return masks.numpy(), iou.numpy()


@needs_bf16
@pytest.mark.golden
@pytest.mark.parametrize(("name", "k"), PROMPT_SETS)
def test_bf16_within_its_bounds(name, k, case_data, golden_model):
    from napari_mobilesam import SamPredictor

    z = case_data(name)
    predictors = {}
    for precision in ("fp32", "bf16"):
        predictor = SamPredictor(golden_model, decoder_precision=precision)
        predictor.set_image_embedding(
            torch.as_tensor(z["image_embedding"]), tuple(z["original_size"])
        )
        predictors[precision] = predictor
    p = prompt_set(z, k)
    masks32, iou32 = _predict(predictors["fp32"], p)
    masks16, iou16 = _predict(predictors["bf16"], p)
    assert iou16.dtype == np.float32 and masks16.dtype == np.bool_
    assert np.abs(iou16 - iou32).max() <= BF16_IOU_ATOL
    assert _mask_iou(masks16, masks32).min() >= BF16_MIN_MASK_IOU
    # Not silently float32: bf16 rounding shows in the scores.
    assert not np.array_equal(iou16, iou32)


@needs_bf16
@pytest.mark.golden
def test_generator_bf16_finds_the_float32_masks(golden_model):
    from napari_mobilesam import SamAutomaticMaskGenerator

    with np.load(case_files()[0]) as z:
        image = z["image"]
    records = {}
    for precision in ("fp32", "bf16"):
        generator = SamAutomaticMaskGenerator(
            golden_model,
            points_per_side=4,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
            decoder_precision=precision,
        )
        records[precision] = generator.generate(image)
    assert records["fp32"], "the float32 run should keep masks with the filters off"
    for ref in records["fp32"]:
        best = max(
            _mask_iou(r["segmentation"], ref["segmentation"]).item() for r in records["bf16"]
        )
        assert best >= BF16_MIN_MASK_IOU


def _write_image(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    image = rng.normal(60, 10, (64, 64)).clip(0, 255).astype(np.uint8)
    image[20:44, 16:40] = 200
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, image)
    return path


@pytest.mark.golden
def test_cli_refuses_bf16_without_native_support(
    monkeypatch, tmp_path, synthetic_checkpoint, capsys
):
    from napari_mobilesam.cli import main

    monkeypatch.setattr(
        decoder_precision, "bf16_decoder_supported", lambda device: (False, "no flags here")
    )
    argv = ["everything", str(_write_image(tmp_path)), "--out", str(tmp_path / "out")]
    argv += ["--weights", str(synthetic_checkpoint), "--decoder-precision", "bf16", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--decoder-precision" in err and "no flags here" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "a.tif").exists()


@needs_bf16
@pytest.mark.golden
def test_cli_everything_with_bf16(tmp_path, synthetic_checkpoint, capsys):
    import tifffile

    from napari_mobilesam.cli import main

    argv = ["everything", str(_write_image(tmp_path)), "--out", str(tmp_path / "out")]
    argv += ["--weights", str(synthetic_checkpoint), "--points-per-side", "2"]
    argv += ["--decoder-precision", "bf16", "--quiet"]
    assert main(argv) == 0
    assert "everything: 1 done" in capsys.readouterr().out
    assert tifffile.imread(tmp_path / "out" / "a.tif").shape == (64, 64)
