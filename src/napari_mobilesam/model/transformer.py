"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention whose internal width can be reduced by ``downsample_rate``."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _separate_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor | None,
        k: torch.Tensor | None,
        v: torch.Tensor | None,
        projected: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """q: (B, Nq, C), k and v: (B, Nk, C) -> (B, Nq, C).

        ``projected`` holds inputs already passed through their projection ("q", "k", "v":
        (1 or B, N, internal_dim)); such an input is given as None and not projected again.
        """
        projected = projected or {}
        batch = max(t.shape[0] for t in (q, k, v, *projected.values()) if t is not None)

        def project(name: str, x: torch.Tensor | None, layer: nn.Linear) -> torch.Tensor:
            out = projected[name] if name in projected else layer(x)
            return self._separate_heads(out.expand(batch, -1, -1))

        q = project("q", q, self.q_proj)
        k = project("k", k, self.k_proj)
        v = project("v", v, self.v_proj)
        out = F.scaled_dot_product_attention(q, k, v)  # scale = (C / heads) ** -0.5
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class TwoWayAttentionBlock(nn.Module):
    """Self-attention on tokens, token->image cross-attention, MLP, image->token cross-attention.

    The first block skips adding the positional encoding to the queries' self-attention input.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def image_constants(self, keys: torch.Tensor, key_pe: torch.Tensor) -> dict[str, torch.Tensor]:
        """The projections of this block that depend on the image tokens alone.

        keys, key_pe: (1, HW, C) -> the key and value projections of token-to-image attention
        and the query projection of image-to-token attention, each (1, HW, C / 2). In the first
        block they are the same for every prompt on an image (without a mask prompt), so
        :meth:`forward` can take them instead of projecting 4096 tokens three times per prompt.
        """
        k = keys + key_pe
        return {
            "t2i_k": self.cross_attn_token_to_image.k_proj(k),
            "t2i_v": self.cross_attn_token_to_image.v_proj(keys),
            "i2t_q": self.cross_attn_image_to_token.q_proj(k),
        }

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        image_constants: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: (B, Nt, C) tokens, keys: (B, HW, C) image tokens; PEs of the same shapes.

        ``image_constants``: :meth:`image_constants` of these very ``keys`` (optional).
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        if image_constants is None:
            k = keys + key_pe
            attn = self.cross_attn_token_to_image(q=q, k=k, v=keys)
        else:
            done = {"k": image_constants["t2i_k"], "v": image_constants["t2i_v"]}
            attn = self.cross_attn_token_to_image(q=q, k=None, v=None, projected=done)
        queries = self.norm2(queries + attn)

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        if image_constants is None:
            k = keys + key_pe
            attn = self.cross_attn_image_to_token(q=k, k=q, v=queries)
        else:
            done = {"q": image_constants["i2t_q"]}
            attn = self.cross_attn_image_to_token(q=None, k=q, v=queries, projected=done)
        keys = self.norm4(keys + attn)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of two-way blocks and a final token->image attention."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.layers = nn.ModuleList(
            [
                TwoWayAttentionBlock(
                    embedding_dim,
                    num_heads,
                    mlp_dim,
                    activation,
                    attention_downsample_rate,
                    skip_first_layer_pe=(i == 0),
                )
                for i in range(depth)
            ]
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def image_constants(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-image constants of the first block for (1, C, h, w) inputs, for :meth:`forward`.

        Valid for every prompt whose ``image_embedding`` (embedding + dense prompt) is this one:
        all prompts on an image that have no mask prompt. Besides the first block's projections
        they hold the image tokens and their PE token-major (``keys``, ``key_pe``: (1, h*w, C),
        contiguous), which the inference path would otherwise copy out on every call.
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        constants = self.layers[0].image_constants(keys, key_pe)
        constants.update(keys=keys.contiguous(), key_pe=key_pe.contiguous())
        return constants

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
        image_constants: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding and image_pe: (B, C, h, w); point_embedding: (B, Nt, C).

        ``image_constants``: :meth:`image_constants` of the same image embedding (optional).
        Returns the processed tokens (B, Nt, C) and image tokens (B, h*w, C).
        """
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            constants = image_constants if i == 0 else None
            queries, keys = layer(queries, keys, point_embedding, key_pe, constants)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys
