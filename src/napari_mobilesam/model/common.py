"""Small building blocks shared by the image encoder, prompt encoder and mask decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d", "MLPBlock", "Conv2dBN", "DropPath", "drop_path_or_identity"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (eps 1e-6, as in SAM and timm).

    Written here rather than imported from timm so that inference never imports timm (and
    torchvision behind it): about 200 MB of resident memory saved at start-up.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a residual branch for whole samples at ``rate``.

    Kept samples are scaled by ``1 / (1 - rate)`` so the expectation is unchanged; in eval mode
    it is the identity. No parameters or buffers, so checkpoint keys do not depend on it.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate <= 0.0:
            return x
        keep = 1.0 - self.rate
        # One draw per sample (dim 0), broadcast over the other dims.
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def drop_path_or_identity(rate: float) -> nn.Module:
    """Stochastic depth for training, the identity where it would do nothing."""
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class MLPBlock(nn.Module):
    """Transformer feed-forward block: ``lin2(act(lin1(x)))``."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Conv2dBN(nn.Sequential):
    """Bias-free convolution followed by BatchNorm, named ``c`` and ``bn`` as in the checkpoint."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        """An equivalent single convolution with the (eval-mode) BatchNorm folded into it."""
        c, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = nn.Conv2d(
            c.in_channels,
            c.out_channels,
            c.kernel_size,
            c.stride,
            c.padding,
            groups=c.groups,
            bias=True,
            device=c.weight.device,
            dtype=c.weight.dtype,
        )
        conv.weight.copy_(c.weight * scale.view(-1, 1, 1, 1))
        conv.bias.copy_(bn.bias - bn.running_mean * scale)
        return conv
