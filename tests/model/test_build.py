"""Building the model and loading checkpoints strictly."""

from __future__ import annotations

import json

import pytest
import torch

from napari_mobilesam import CheckpointError, build_mobile_sam
from napari_mobilesam.model.build import resolve_device


@pytest.fixture(scope="module")
def random_model():
    return build_mobile_sam(None, device="cpu", optimize=False)


@pytest.fixture(scope="module")
def synthetic_state_dict(synthetic_checkpoint):
    return torch.load(synthetic_checkpoint, map_location="cpu", weights_only=True)


def test_layout_matches_official_keys(golden_dir, random_model):
    """Every key, shape and dtype of the official checkpoint, nothing more, nothing less."""
    layout = json.loads((golden_dir / "mobile_sam_keys.json").read_text())
    state = random_model.state_dict()
    assert list(state) == list(layout["keys"])
    for key, spec in layout["keys"].items():
        assert list(state[key].shape) == spec["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == spec["dtype"], key
    n_params = sum(p.numel() for p in random_model.parameters())
    assert n_params == layout["parameter_count_total"] == 10_130_092


def test_optimized_model_folds_batchnorm(synthetic_state_dict):
    from napari_mobilesam.model.common import Conv2dBN

    model = build_mobile_sam(synthetic_state_dict, device="cpu")
    assert model.optimized and not model.training
    assert not any(isinstance(m, (Conv2dBN, torch.nn.BatchNorm2d)) for m in model.modules())
    assert model.image_encoder.channels_last


def test_random_model_is_eval_float32_cpu(random_model):
    assert not random_model.training
    assert random_model.device == torch.device("cpu")
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in random_model.parameters())


def test_loads_synthetic_checkpoint_strictly(synthetic_checkpoint, synthetic_state_dict):
    model = build_mobile_sam(synthetic_checkpoint, device="cpu", optimize=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, synthetic_state_dict[key]), key


def test_attention_bias_follows_loaded_weights(synthetic_state_dict):
    """The relative-position bias must come from the loaded parameters, not a stale table."""
    model = build_mobile_sam(synthetic_state_dict, device="cpu", optimize=False)
    attn = model.image_encoder.layers[1].blocks[0].attn
    x = torch.randn(2, 49, 128)
    out_loaded = attn(x)
    with torch.no_grad():
        attn.attention_biases.zero_()
    assert not torch.allclose(attn(x), out_loaded, atol=1e-3)


def test_missing_key_is_named(tmp_path, synthetic_state_dict):
    sd = dict(synthetic_state_dict)
    del sd["mask_decoder.iou_token.weight"]
    path = tmp_path / "missing.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): mask_decoder.iou_token.weight"):
        build_mobile_sam(path)


def test_extra_key_is_named(synthetic_state_dict):
    sd = dict(synthetic_state_dict)
    sd["image_encoder.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): image_encoder.extra.weight"):
        build_mobile_sam(sd)


def test_wrong_shape_is_named(synthetic_state_dict):
    sd = dict(synthetic_state_dict)
    sd["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 128)
    with pytest.raises(
        CheckpointError,
        match=r"prompt_encoder.no_mask_embed.weight \(checkpoint \(1, 128\), model \(1, 256\)\)",
    ):
        build_mobile_sam(sd)


def test_many_missing_keys_are_summarised():
    with pytest.raises(CheckpointError, match=r"439 missing key\(s\): .*\(431 more\)"):
        build_mobile_sam({})


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_mobile_sam(tmp_path / "nope.pt")


def test_truncated_file(tmp_path, synthetic_checkpoint):
    path = tmp_path / "truncated.pt"
    path.write_bytes(synthetic_checkpoint.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="truncated"):
        build_mobile_sam(path)


def test_pickled_code_is_not_executed(tmp_path):
    """weights_only loading refuses arbitrary objects instead of running them."""

    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(CheckpointError, match="Could not read"):
        build_mobile_sam(path)


def test_non_dict_checkpoint(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        build_mobile_sam(path)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    auto = resolve_device(None)
    assert auto == resolve_device("auto")
    if expected:
        assert auto.type == expected
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        assert auto.type == "cpu"


def test_gelu_fusion_self_check_and_fallback(synthetic_state_dict, monkeypatch):
    """Fusion is used only where the self-check passes; without it the model still works."""
    from napari_mobilesam.model import inference

    fused = build_mobile_sam(synthetic_state_dict, device="cpu")
    uses_fusion = any(isinstance(m, inference.ConvGELU) for m in fused.modules())
    assert uses_fusion == inference.gelu_fusion_available()
    monkeypatch.setattr(inference, "_FUSION_OK", False)
    plain = build_mobile_sam(synthetic_state_dict, device="cpu")
    assert not any(isinstance(m, inference.ConvGELU) for m in plain.modules())
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        diff = (fused.image_encoder(x) - plain.image_encoder(x)).abs().max().item()
    assert diff < 1e-4
