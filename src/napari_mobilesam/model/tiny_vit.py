"""TinyViT-5M image encoder in the MobileSAM variant.

Compared with the ImageNet TinyViT this variant takes a 1024x1024 input, keeps stride 1 in the
last patch merging (so the last two stages both run at 64x64), downsamples at the end of each
stage and adds SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to 256 channels.
Module names follow the ``mobile_sam.pt`` checkpoint so that it loads with ``strict=True``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv2dBN, LayerNorm2d, drop_path_or_identity


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 Conv+BN with a GELU between them: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, in_chs: int, embed_dim: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chs, embed_dim // 2, 3, 2, 1),
            act_layer(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block; the last activation comes after the residual sum. NCHW."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        expand_ratio: float,
        act_layer: type[nn.Module] = nn.GELU,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        mid_chs = int(in_chs * expand_ratio)
        self.conv1 = Conv2dBN(in_chs, mid_chs, 1)
        self.act1 = act_layer()
        self.conv2 = Conv2dBN(mid_chs, mid_chs, 3, 1, 1, groups=mid_chs)
        self.act2 = act_layer()
        self.conv3 = Conv2dBN(mid_chs, out_chs, 1, bn_weight_init=0.0)
        self.act3 = act_layer()
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = self.conv3(x)
        return self.act3(self.drop_path(x) + shortcut)


class PatchMerging(nn.Module):
    """1x1 Conv+BN -> GELU -> depthwise 3x3 Conv+BN -> GELU -> 1x1 Conv+BN. NCHW in and out.

    ``stride`` is 2 except for the merge into the last stage, which keeps the 64x64 grid.
    """

    def __init__(
        self, dim: int, out_dim: int, stride: int = 2, act_layer: type[nn.Module] = nn.GELU
    ) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(dim, out_dim, 1)
        self.act = act_layer()
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks followed by a patch merging. NCHW in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        out_dim: int,
        expand_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        drop_path: tuple[float, ...] = (),
    ) -> None:
        super().__init__()
        rates = drop_path or (0.0,) * depth
        self.blocks = nn.ModuleList(
            [MBConv(dim, dim, expand_ratio, act_layer, rates[i]) for i in range(depth)]
        )
        self.downsample = PatchMerging(dim, out_dim, stride=2, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class Attention(nn.Module):
    """Multi-head self-attention over one window with TinyViT's learned relative-position bias.

    The bias for a query/key pair at offset (dy, dx) inside a ``window x window`` window is
    ``attention_biases[head, |dy| * window + |dx|]``. The expanded (heads, N, N) table is gathered
    on every call instead of being cached, so it can never go stale after loading weights.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = key_dim  # attention ratio 1 in every TinyViT-5M block
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(num_heads * self.val_dim, dim)

        points = list(itertools.product(range(window_size), range(window_size)))
        idxs = [abs(p[0] - q[0]) * window_size + abs(p[1] - q[1]) for p in points for q in points]
        n = len(points)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer(
            "attention_bias_idxs", torch.tensor(idxs, dtype=torch.long).view(n, n), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) tokens of B windows -> (B, N, C)."""
        b, n, _ = x.shape
        x = self.norm(x)
        # The checkpoint's qkv layout is per head: [q_h | k_h | v_h] for each head h.
        q, k, v = (
            self.qkv(x)
            .view(b, n, self.num_heads, -1)
            .permute(0, 2, 1, 3)
            .split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        )
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        if q.device.type == "cpu":
            # On CPU, SDPA with a float mask takes its reference path plus mask checks; plain
            # matmuls are about 10% faster for the whole encoder and give the same result.
            attn = (q * self.key_dim**-0.5) @ k.transpose(-2, -1) + bias
            x = attn.softmax(dim=-1) @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale key_dim**-0.5
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class TinyVitMlp(nn.Module):
    """Pre-LayerNorm MLP: ``fc2(act(fc1(norm(x))))``."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyVitBlock(nn.Module):
    """Window attention (residual) -> depthwise 3x3 Conv+BN (no residual) -> MLP (residual).

    Works on NHWC maps. Maps that are not a multiple of the window are zero-padded at the bottom
    and right before attention; the padded tokens take part as keys and values (no masking),
    which is what the checkpoint was trained with.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
        act_layer: type[nn.Module] = nn.GELU,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.drop_path = drop_path_or_identity(drop_path)
        self.attn = Attention(dim, dim // num_heads, num_heads, window_size)
        self.mlp = TinyVitMlp(dim, int(dim * mlp_ratio), act_layer)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        x = x + self.drop_path(self._window_attention(x))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path(self.mlp(x))


class TinyVitStage(nn.Module):
    """TinyViT blocks, then an optional patch merging. NCHW in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        out_dim: int | None = None,
        downsample_stride: int = 2,
        mlp_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        drop_path: tuple[float, ...] = (),
    ) -> None:
        super().__init__()
        rates = drop_path or (0.0,) * depth
        self.blocks = nn.ModuleList(
            [
                TinyVitBlock(
                    dim, num_heads, window_size, mlp_ratio, act_layer=act_layer, drop_path=r
                )
                for r in rates[:depth]
            ]
        )
        self.downsample = (
            PatchMerging(dim, out_dim, downsample_stride, act_layer)
            if out_dim is not None
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class TinyViT(nn.Module):
    """MobileSAM image encoder: (B, 3, 1024, 1024) normalised image -> (B, 256, 64, 64)."""

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: tuple[int, ...] = (64, 128, 160, 320),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (2, 4, 5, 10),
        window_sizes: tuple[int, ...] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
        act_layer: type[nn.Module] = nn.GELU,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.channels_last = False  # set by modeling.inference.optimize_for_inference
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], act_layer)

        num_stages = len(depths)
        # Stochastic depth grows linearly with block index (training only; 0 for inference).
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(num_stages)]
        stage_rates = [tuple(rates[s : s + d]) for s, d in zip(starts, depths, strict=True)]
        stages: list[nn.Module] = [
            ConvStage(
                embed_dims[0],
                depths[0],
                embed_dims[1],
                mbconv_expand_ratio,
                act_layer,
                drop_path=stage_rates[0],
            )
        ]
        for i in range(1, num_stages):
            last = i == num_stages - 1
            stages.append(
                TinyVitStage(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    out_dim=None if last else embed_dims[i + 1],
                    # The merge into the last stage keeps the resolution (64x64 at 1024 input).
                    downsample_stride=1 if i == num_stages - 2 else 2,
                    mlp_ratio=mlp_ratio,
                    act_layer=act_layer,
                    drop_path=stage_rates[i],
                )
            )
        self.layers = nn.ModuleList(stages)

        # ImageNet classifier kept only so the checkpoint loads strictly; unused for segmentation.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)

        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self.neck(x)
