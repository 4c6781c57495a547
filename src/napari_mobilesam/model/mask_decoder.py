"""SAM's mask decoder: image embedding + prompt embeddings -> mask logits and IoU scores."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import fast_decoder
from .common import LayerNorm2d
from .transformer import TwoWayTransformer


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Predicts 4 masks (one single-object mask, three multimask candidates) and their IoUs.

    Arguments:
      transformer_dim: channel dimension of the transformer (256).
      transformer: the two-way transformer.
      num_multimask_outputs: candidates returned when ``multimask_output`` is True (3).
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            [
                MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
                for _ in range(self.num_mask_tokens)
            ]
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )
        # Set by model.inference.optimize_for_inference: forward() takes model.fast_decoder's
        # path (same results within rounding, about half the work).
        self.fast_path = False

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        image_constants: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts on one image.

        Arguments:
          image_embeddings: (1, C, 64, 64) or (B, C, 64, 64) image embedding.
          image_pe: (1, C, 64, 64) positional encoding of the embedding grid.
          sparse_prompt_embeddings: (B, T, C).
          dense_prompt_embeddings: (B, C, 64, 64).
          multimask_output: return the 3 candidates (True) or the single-object mask (False).
          image_constants: ``transformer.image_constants(image_embeddings + dense, image_pe)``
            when every prompt of the batch has that dense embedding (optional; saves work).

        Returns:
          masks: (B, 3 or 1, 256, 256) low-res logits; iou_pred: (B, 3 or 1).
        """
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        if self.fast_path and not _tracing():
            return fast_decoder.predict_masks(
                self,
                image_embeddings,
                image_pe,
                sparse_prompt_embeddings,
                dense_prompt_embeddings,
                image_constants,
                mask_slice,
            )
        masks, iou_pred = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            image_constants,
        )
        return masks[:, mask_slice], iou_pred[:, mask_slice]

    def forward_kept(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        keep: Callable[[torch.Tensor], torch.Tensor],
        image_constants: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` for callers that discard some prompts by their predicted IoUs.

        Arguments:
          keep: maps iou_pred (B, 3 or 1) to a (B,) boolean tensor, True for the prompts whose
            masks are wanted. The IoUs come from the output tokens alone, so on the fast path
            the other prompts skip the output upscaling and the mask product.
          (the others as in :meth:`forward`)

        Returns:
          masks: (K, 3 or 1, 256, 256) low-res logits of the K kept prompts, in order;
          iou_pred: (B, 3 or 1) of every prompt; kept: (K,) indices of the kept prompts.
        """
        mask_slice = slice(1, None) if multimask_output else slice(0, 1)
        args = (image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        if self.fast_path and not _tracing():
            return fast_decoder.predict_masks(self, *args, image_constants, mask_slice, keep)
        masks, iou_pred = self.predict_masks(*args, image_constants)
        masks, iou_pred = masks[:, mask_slice], iou_pred[:, mask_slice]
        kept = keep(iou_pred).nonzero().flatten()
        return masks[kept], iou_pred, kept

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        image_constants: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All 4 masks (B, 4, 256, 256) and IoUs (B, 4); see :meth:`forward`."""
        bs = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(bs, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if image_embeddings.shape[0] != bs:
            image_embeddings = image_embeddings.expand(bs, -1, -1, -1)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(bs, -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens, image_constants)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self.output_upscaling(src)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


def _tracing() -> bool:
    """Whether a tracer or exporter is recording (it gets the module-by-module path)."""
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or compiling()
