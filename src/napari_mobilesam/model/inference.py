"""Inference-only rewrites of a loaded model: same outputs (within the golden tolerances), faster.

Applied by ``build_mobile_sam(..., optimize=True)`` (the default) after the weights are loaded;
the rewritten model no longer has the checkpoint's key layout, so it cannot load weights again.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Conv2dBN


def fold_batchnorm(module: nn.Module) -> int:
    """Replace every :class:`Conv2dBN` below ``module`` by one convolution; returns how many.

    BatchNorm in eval mode is an affine map per channel, so it folds into the preceding
    convolution's weights and bias: one pass over the feature map instead of two.
    """
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2dBN):
                setattr(parent, name, child.fused())
                count += 1
    return count


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Fold BatchNorm into convolutions, give the mask decoder its factorised inference path
    (``model.fast_decoder``); on CPU also use channels-last memory for the encoder and fuse
    its GELUs into the preceding layers where oneDNN allows it.

    Channels-last lets oneDNN run the encoder's many 1x1 and depthwise convolutions without
    reordering the data before and after each one (about 1.2x on the encoder on CPU).
    """
    if model.training:
        raise ValueError("optimize_for_inference expects a model in eval mode.")
    fold_batchnorm(model)
    decoder = getattr(model, "mask_decoder", None)
    if decoder is not None:
        decoder.fast_path = True  # model.fast_decoder: the same masks, about half the work
    encoder = getattr(model, "image_encoder", None)
    if encoder is not None and next(encoder.parameters()).device.type == "cpu":
        encoder.to(memory_format=torch.channels_last)
        encoder.channels_last = True
        # The fused oneDNN ops take float32 only, so not under a half-precision autocast.
        if gelu_fusion_available() and getattr(model, "encoder_dtype", None) is None:
            fuse_gelu(encoder)
    model.optimized = True
    return model


# ------------------------------------------------------------------------ GELU fusion (CPU)
# The encoder's exact GELUs cost about a fifth of its time on CPU when run as separate passes
# over 256x256x256 maps. oneDNN can apply GELU (erf form) while it writes a convolution's or a
# linear layer's output; PyTorch exposes that through the ``mkldnn`` pointwise ops that its own
# compiler uses. They are not a documented API, so they are used only after a self-check below,
# with the plain modules as the fallback.


def _fused_ops() -> tuple[object, object] | None:
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return ops._convolution_pointwise, ops._linear_pointwise  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):
        return None


class ConvGELU(nn.Module):
    """``gelu(conv(x))`` in one oneDNN call (CPU only)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            "gelu", [None], "none",
        )  # fmt: skip


class LinearGELU(nn.Module):
    """``gelu(linear(x))`` in one oneDNN call (CPU only)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [None], "none")


_FUSION_OK: bool | None = None


def gelu_fusion_available() -> bool:
    """Whether the fused ops exist here and match conv/linear + exact GELU (checked once)."""
    global _FUSION_OK
    if _FUSION_OK is None:
        _FUSION_OK = False
        if _fused_ops() is not None and torch.backends.mkldnn.is_available():
            try:
                gen = torch.Generator().manual_seed(0)
                x = torch.randn(1, 8, 9, 9, generator=gen)
                conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
                linear = nn.Linear(8, 16)
                with torch.inference_mode():
                    ok_conv = torch.allclose(
                        ConvGELU(conv)(x), nn.functional.gelu(conv(x)), atol=1e-5
                    )
                    t = x.permute(0, 2, 3, 1)
                    ok_lin = torch.allclose(
                        LinearGELU(linear)(t), nn.functional.gelu(linear(t)), atol=1e-5
                    )
                _FUSION_OK = bool(ok_conv and ok_lin)
            except (RuntimeError, TypeError):
                _FUSION_OK = False
    return _FUSION_OK


def fuse_gelu(encoder: nn.Module) -> int:
    """Merge each GELU of the TinyViT encoder into the layer before it; returns how many.

    Call after :func:`fold_batchnorm` (the convolutions must carry their own bias).
    """
    from .tiny_vit import MBConv, PatchEmbed, PatchMerging, TinyVitMlp

    count = 0
    for module in encoder.modules():
        pairs: list[tuple[str, str]] = []
        if isinstance(module, PatchEmbed):
            module.seq[0] = ConvGELU(module.seq[0])
            module.seq[1] = nn.Identity()
            count += 1
        elif isinstance(module, MBConv):
            pairs = [("conv1", "act1"), ("conv2", "act2")]
        elif isinstance(module, PatchMerging):
            pairs = [("conv1", ""), ("conv2", "act")]
        elif isinstance(module, TinyVitMlp):
            module.fc1 = LinearGELU(module.fc1)
            module.act = nn.Identity()
            count += 1
        for conv_name, act_name in pairs:
            setattr(module, conv_name, ConvGELU(getattr(module, conv_name)))
            if act_name:
                setattr(module, act_name, nn.Identity())
            count += 1
    return count
