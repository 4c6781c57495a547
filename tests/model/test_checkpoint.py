"""Recognising wrong weights files: other models, foreign files, truncated or wrapped checkpoints.

Nothing here touches the network; every file is written by the test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from napari_mobilesam import CheckpointError, build_mobile_sam
from napari_mobilesam.model import checkpoint as C

# --- Recognising wrong files -------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_state_dict(synthetic_checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(synthetic_checkpoint, map_location="cpu", weights_only=True)


def _sam_vit_b() -> dict[str, torch.Tensor]:
    """A few keys of a SAM ViT-B checkpoint, with small tensors of the telling widths."""
    return {
        "image_encoder.pos_embed": torch.zeros(1, 1, 1, 768),
        "image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 1, 1),
        "image_encoder.blocks.0.attn.qkv.weight": torch.zeros(4, 4),
        "image_encoder.blocks.0.norm1.weight": torch.zeros(4),
        "mask_decoder.iou_token.weight": torch.zeros(1, 256),
    }


def _sam2() -> dict[str, object]:
    return {
        "model": {
            "image_encoder.trunk.patch_embed.proj.weight": torch.zeros(4, 3, 1, 1),
            "memory_attention.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2),
            "sam_mask_decoder.iou_token.weight": torch.zeros(1, 4),
        }
    }


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        (_sam_vit_b(), r"SAM ViT-B checkpoint \(image_encoder\.pos_embed"),
        (_sam2(), r"SAM 2"),
        ({"image_encoder.blocks.31.mlp.lin1.weight": torch.zeros(1)}, r"SAM ViT-H"),
        ({"mask_decoder.hf_token.weight": torch.zeros(1)}, r"HQ-SAM"),
        ({"patch_embed.seq.0.c.weight": torch.zeros(1)}, r"image-encoder-only"),
        ({"model": {"foo": torch.zeros(1)}, "epoch": 3}, r"under 'model' \(other entries: epoch"),
        ({}, r"empty dict"),
        ({"lr": 0.1, "name": "x"}, r"without any tensor"),
        ({"foo.weight": torch.zeros(1)}, r"matches no known model \(first keys: foo.weight\)"),
    ],
)
def test_identify_checkpoint(checkpoint: dict[str, object], expected: str) -> None:
    assert re.search(expected, C.identify_checkpoint(checkpoint))


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        (
            _sam_vit_b(),
            r"looks like a SAM ViT-B checkpoint .*needs the MobileSAM vit_t file "
            r"mobile_sam\.pt",
        ),
        (_sam2(), r"looks like a SAM 2 / SAM 2.1 \(Hiera\) checkpoint .*stored under 'model'"),
        ({"foo.weight": torch.zeros(1)}, r"439 missing key.*matches no known model"),
    ],
)
def test_wrong_model_file_is_named(tmp_path: Path, checkpoint: object, expected: str) -> None:
    path = tmp_path / "wrong.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=expected):
        build_mobile_sam(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", r"is an empty file \(0 bytes"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, r"is a PNG image, not a PyTorch checkpoint"),
        (b"<!DOCTYPE html>\n<html><body>Sign in</body></html>", r"is an HTML page"),
        (b"Not Found\n", r"is a text file \(starting with 'Not Found'\)"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n", r"Git LFS pointer"),
    ],
)
def test_foreign_file_is_named(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "mobile_sam.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        C.load_weights_state_dict(path)


def test_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"image_encoder.layers.0.x": torch.zeros(10_000)}, good)
    path = tmp_path / "mobile_sam.pt"
    path.write_bytes(good.read_bytes()[:20_000])
    with pytest.raises(CheckpointError, match="truncated"):
        C.load_weights_state_dict(path)


def test_pickled_code_is_not_executed_on_the_weights_path(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, ("raise SystemExit('executed')",))

    path = tmp_path / "evil.pt"
    torch.save({"image_encoder.layers.0.x": Payload()}, path)
    with pytest.raises(CheckpointError, match="Could not read"):
        C.load_weights_state_dict(path)


def test_wrappers_are_unwrapped(synthetic_state_dict: dict[str, torch.Tensor]) -> None:
    assert C.identify_checkpoint(synthetic_state_dict).startswith("a MobileSAM")
    wrapped = {"model": synthetic_state_dict, "optimizer": {}, "epoch": 7}
    assert C.unwrap_state_dict(wrapped).keys() == synthetic_state_dict.keys()
    prefixed = {"state_dict": {f"module.{k}": v for k, v in synthetic_state_dict.items()}}
    assert C.unwrap_state_dict(prefixed).keys() == synthetic_state_dict.keys()
    model = build_mobile_sam(wrapped, device="cpu", optimize=False)
    key = "image_encoder.patch_embed.seq.0.c.weight"
    assert torch.equal(model.state_dict()[key], synthetic_state_dict[key])


def test_unwrapping_leaves_other_dicts_alone() -> None:
    sam2 = _sam2()
    assert C.unwrap_state_dict(sam2) == sam2
