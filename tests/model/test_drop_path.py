"""Stochastic depth, written here so that the model needs torch alone (no timm)."""

from __future__ import annotations

import torch
from torch import nn

from napari_mobilesam.model.common import DropPath, drop_path_or_identity
from napari_mobilesam.model.tiny_vit import TinyViT


def test_eval_mode_and_rate_zero_are_the_identity() -> None:
    x = torch.randn(4, 8, 5, 5)
    layer = DropPath(0.3).eval()
    assert layer(x) is x
    assert isinstance(drop_path_or_identity(0.0), nn.Identity)
    assert isinstance(drop_path_or_identity(0.1), DropPath)


def test_training_drops_whole_samples_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    out = layer(torch.ones(4000, 3, 2))
    per_sample = out.reshape(4000, -1)
    # Each sample is either dropped (all 0) or kept and scaled by 1 / (1 - rate) (all 4/3).
    kept = per_sample[:, 0] > 0
    torch.testing.assert_close(per_sample[kept], torch.full_like(per_sample[kept], 4 / 3))
    assert (per_sample[~kept] == 0).all()
    assert 0.70 < kept.float().mean().item() < 0.80  # 3000 +- 4 sigma of 4000 draws
    assert abs(out.mean().item() - 1.0) < 0.06


def test_checkpoint_keys_do_not_depend_on_the_drop_rate() -> None:
    small = {"embed_dims": (8, 16, 16, 16), "num_heads": (1, 1, 1, 1), "out_chans": 8}
    inference = TinyViT(**small, drop_path_rate=0.0)
    training = TinyViT(**small, drop_path_rate=0.2)
    assert set(inference.state_dict()) == set(training.state_dict())
    assert any(isinstance(m, DropPath) for m in training.modules())
    assert not any(isinstance(m, DropPath) for m in inference.modules())
