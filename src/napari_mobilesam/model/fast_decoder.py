"""The mask decoder's inference path: the same function as :class:`MaskDecoder`, less work.

SAM's decoder lets a handful of prompt tokens (``Nt``: 7 for one point) and 4096 image tokens
attend to each other. Written as in the paper, every cross-attention projects all 4096 image
tokens (256 -> 128 channels) for the keys, the values or the queries, and projects the 4096
outputs back (128 -> 256): each a (4096 x 256 x 128) product per prompt. Because attention is
linear in those projections, each one can be moved to the token side instead (``h`` heads of
``d`` channels, ``W`` a projection's weight):

- token -> image: ``softmax(Q K^T) V`` with ``K = X W_k^T + b_k`` and ``V = X W_v^T + b_v``
  equals ``softmax((Q W_k) X^T) (X W_v^T) + b_v`` per head (``Q b_k`` is the same for every
  key of a row, so the softmax drops it; the rows of the softmax sum to 1, so ``b_v`` passes
  through). The image side is two (h*Nt x 256 x 4096) products on ``X`` itself;
- image -> token: the scores ``(X W_q^T + b_q) K^T`` are ``X (W_q^T K^T) + b_q K^T`` and the
  output projection ``sum_h P_h (V_h W_o,h^T) + b_o`` folds into the token values: again two
  (4096 x 256 x h*Nt) products, and the residual add rides along in ``baddbmm``.

With one point (``h*Nt = 56 < 128``) that halves the multiply-adds of the transformer and
removes the (B, 4096, 128) intermediates and their copies. The upscaling runs on the image
tokens' own (channels-last) layout: the 2x2-stride-2 transposed convolutions are per-pixel
linear maps, the channel LayerNorm is a LayerNorm over the last axis, and the masks are
reordered into (256, 256) only at the end, for the requested masks only.

Results differ from the module-by-module path only by float rounding (the golden tests pin
both). Autograd, tracing and export use that path; this one is for inference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .inference import gelu_fusion_available

# The modules this path reads (MaskDecoder, TwoWayAttentionBlock, Attention) are typed as
# nn.Module: mask_decoder imports this module, so importing it back would be a cycle.
Attention = TwoWayAttentionBlock = MaskDecoder = nn.Module


def _heads(attn: Attention) -> tuple[int, int]:
    return attn.num_heads, attn.internal_dim // attn.num_heads


def token_to_image(
    attn: Attention, q: torch.Tensor, keys_pe: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """Cross-attention of Nt tokens to the image tokens with the key/value projections moved
    to the token side.

    Arguments:
      q: (B, Nt, C) token queries (tokens + their PE).
      keys_pe: (B or 1, N, C) image tokens + PE (the keys before projection).
      keys: (B or 1, N, C) image tokens (the values before projection).

    Returns:
      (B, Nt, C): ``attn(q, keys_pe, keys)``.
    """
    b, nt, c = q.shape
    h, d = _heads(attn)
    scale = d**-0.5
    qh = attn.q_proj(q).view(b, nt, h, d)
    # (B, h, Nt, C): each head's query mapped back through that head's key weights.
    a = torch.einsum("bthd,hdc->bhtc", qh, attn.k_proj.weight.view(h, d, c) * scale)
    a = a.reshape(b, h * nt, c)
    scores = torch.matmul(a, keys_pe.transpose(1, 2))  # (B, h*Nt, N)
    weights = torch.softmax(scores, dim=-1)
    mixed = torch.matmul(weights, keys).view(b, h, nt, c)  # (B, h, Nt, C)
    out = torch.einsum("bhtc,hdc->bthd", mixed, attn.v_proj.weight.view(h, d, c))
    out = out + attn.v_proj.bias.view(h, d)
    return attn.out_proj(out.reshape(b, nt, h * d))


def image_to_token(
    attn: Attention,
    keys_pe: torch.Tensor,
    keys: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    projected_queries: torch.Tensor | None = None,
    owned_keys: bool = False,
) -> torch.Tensor:
    """Cross-attention of the image tokens to Nt tokens, residual included: ``keys + attn(...)``.

    Arguments:
      keys_pe: (B or 1, N, C) image tokens + PE (the queries before projection).
      keys: (B or 1, N, C) image tokens (the residual).
      k, v: (B, Nt, C) token keys (tokens + PE) and values (tokens).
      projected_queries: (1, N, h*d) ``attn.q_proj(keys_pe)`` when already known (then
        ``keys_pe`` is not used).
      owned_keys: ``keys`` is a temporary of the caller's that may be overwritten with the
        result.

    Returns:
      (B, N, C) before the block's LayerNorm.
    """
    b, nt, c = k.shape
    h, d = _heads(attn)
    scale = d**-0.5
    kh = attn.k_proj(k).view(b, nt, h, d) * scale
    vh = attn.v_proj(v).view(b, nt, h, d)
    if projected_queries is None:
        # Scores = keys_pe @ (W_q^T K^T) + b_q K^T: (N, C) x (C, h*Nt) per prompt.
        w_q = attn.q_proj.weight.view(h, d, c)
        m = torch.einsum("hdc,bthd->bcht", w_q, kh).reshape(b, c, h * nt)
        bias = torch.einsum("hd,bthd->bht", attn.q_proj.bias.view(h, d), kh).reshape(b, 1, h * nt)
        scores = torch.baddbmm(bias, keys_pe.expand(b, -1, -1), m)
    else:
        # Block-diagonal (h*d, h*Nt) matrix: head j's queries meet only head j's keys.
        m = torch.zeros(b, h, d, h, nt, dtype=kh.dtype, device=kh.device)
        idx = torch.arange(h, device=kh.device)
        m[:, idx, :, idx, :] = kh.permute(2, 0, 3, 1)
        scores = torch.matmul(projected_queries, m.view(b, h * d, h * nt))
    n = scores.shape[1]
    weights = _softmax_short_rows(scores.view(b, n, h, nt)).view(b, n, h * nt)
    # Values through the output projection, one (Nt, C) block per head; the output bias is
    # split over the heads (each head's weights sum to 1 per row).
    w_o = attn.out_proj.weight.view(c, h, d)
    u = torch.einsum("bthd,chd->bhtc", vh, w_o) + attn.out_proj.bias / h
    u = u.reshape(b, h * nt, c)
    # (Under autocast the product runs in the autocast dtype: in place it could not.)
    in_place = owned_keys and keys.shape[0] == b
    if in_place and not torch.is_autocast_enabled(keys.device.type):
        return keys.baddbmm_(weights, u)  # the caller's own copy: no (B, N, C) copy
    return torch.baddbmm(keys.expand(b, -1, -1), weights, u)


def _softmax_short_rows(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a short last axis (Nt), in place on ``x``.

    torch.softmax vectorises along the softmax axis, so 7 tokens leave it mostly scalar;
    written as whole-tensor exp and small reductions it ran 3.4x faster on (2, 4096, 8, 7).
    """
    x = x.sub_(x.amax(dim=-1, keepdim=True)).exp_()
    return x.div_(x.sum(dim=-1, keepdim=True))


def _layer_norm(norm: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def two_way_block(
    block: TwoWayAttentionBlock,
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_pe: torch.Tensor,
    key_pe: torch.Tensor,
    constants: dict[str, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`TwoWayAttentionBlock.forward` on this path; keys (B or 1, N, C)."""
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + block.self_attn(q=q, k=q, v=queries)
    queries = block.norm1(queries)

    q = queries + query_pe
    keys_pe = None
    if constants is not None:
        done = {"k": constants["t2i_k"], "v": constants["t2i_v"]}
        attn = block.cross_attn_token_to_image(q=q, k=None, v=None, projected=done)
    else:
        keys_pe = keys + key_pe
        attn = token_to_image(block.cross_attn_token_to_image, q, keys_pe, keys)
    queries = block.norm2(queries + attn)
    queries = block.norm3(queries + block.mlp(queries))

    q = queries + query_pe
    projected = None if constants is None else constants["i2t_q"]
    # After the first block the image tokens are this path's own (B, N, C) temporaries.
    owned = constants is None
    keys = image_to_token(
        block.cross_attn_image_to_token, keys_pe, keys, q, queries, projected, owned
    )
    return queries, _layer_norm(block.norm4, keys)


def upscale_masks(
    decoder: MaskDecoder, tokens: torch.Tensor, hyper_in: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """The output upscaling and the hypernetwork product on channels-last image tokens.

    Arguments:
      tokens: (B, h*w, C) image tokens after the transformer.
      hyper_in: (B, M, C/8) one hypernetwork vector per requested mask.
      size: (h, w) of the token grid (64, 64).

    Returns:
      (B, M, 4h, 4w) mask logits.
    """
    conv1, norm, act1, conv2, act2 = decoder.output_upscaling
    b, n, c = tokens.shape
    # ConvTranspose2d(k=2, s=2): out[o, 2i+a, 2j+b] = bias[o] + sum_c x[c, i, j] w[c, o, a, b],
    # a linear map per input pixel to its (a, b, o) outputs.
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, -1)
    x = torch.addmm(conv1.bias.repeat(4), tokens.reshape(b * n, c), w1)
    mid = conv1.weight.shape[1]
    x = act1(F.layer_norm(x.view(-1, mid), (mid,), norm.weight, norm.bias, norm.eps))
    if gelu_fusion_available() and x.device.type == "cpu" and x.dtype == torch.float32:
        # GELU applied by oneDNN as it writes the product: 1.7x faster than two passes.
        w2 = conv2.weight.permute(2, 3, 1, 0).reshape(-1, mid)
        x = torch.ops.mkldnn._linear_pointwise(x, w2, conv2.bias.repeat(4), "gelu", [None], "none")
    else:
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(mid, -1)
        x = act2(torch.addmm(conv2.bias.repeat(4), x, w2))
    out = conv2.weight.shape[1]
    masks = torch.bmm(hyper_in, x.view(b, -1, out).transpose(1, 2))  # (B, M, h*w*16)
    # Pixel order is (i, j, a, b, a2, b2): row 4i + 2a + a2, column 4j + 2b + b2. A gather
    # through a fixed index puts them in place 6x faster than the 8-d permuted copy, whose
    # innermost runs are 2 values long; both only move values, so the results are identical.
    h, w = size
    m = hyper_in.shape[1]
    order = _raster_order(h, w, masks.device)
    return masks.view(b * m, -1).index_select(1, order).view(b, m, 4 * h, 4 * w)


@functools.cache
def _raster_order(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(16*h*w,) source index of each raster pixel of the upscaled masks (see above)."""
    # Made outside inference mode, so that the cached index also serves calls that are not.
    with torch.inference_mode(False):
        index = torch.arange(16 * h * w, device=device).view(h, w, 2, 2, 2, 2)
        return index.permute(0, 2, 4, 1, 3, 5).reshape(-1)


def predict_masks(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    image_constants: dict[str, torch.Tensor] | None,
    mask_slice: slice,
    keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:meth:`MaskDecoder.predict_masks` on this path, for the masks in ``mask_slice`` only.

    ``keep``: given iou_pred (B, M), a (B,) boolean tensor of the prompts whose masks are
    wanted. The IoU head reads only the output tokens, so the others skip the output
    upscaling, about 40% of a prompt's work.

    Returns:
      masks (B, M, 256, 256) and iou_pred (B, M); with ``keep``, masks of the kept prompts
      only (K, M, 256, 256), iou_pred (B, M) and the kept prompts' indices (K,).
    """
    bs = sparse_prompt_embeddings.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.expand(bs, -1, -1), sparse_prompt_embeddings), dim=1)
    c, h, w = image_embeddings.shape[-3:]
    if image_constants is not None and "keys" in image_constants:
        # The same tokens as below, made once per image (TwoWayTransformer.image_constants).
        keys, key_pe = image_constants["keys"], image_constants["key_pe"]
    else:
        # Without a mask prompt the dense embedding is one vector for all: the image tokens
        # stay a single (1, N, C) copy until the first block makes them differ per prompt.
        dense = dense_prompt_embeddings
        if dense.shape[0] > 1 and dense.stride(0) == 0:
            dense = dense[:1]
        src = image_embeddings + dense
        # Token-major copies: every prompt reads them; one contiguous copy beats strided reads.
        keys = src.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
    transformer = decoder.transformer
    queries = tokens
    for i, layer in enumerate(transformer.layers):
        constants = image_constants if i == 0 else None
        queries, keys = two_way_block(layer, queries, keys, tokens, key_pe, constants)
    attn = token_to_image(
        transformer.final_attn_token_to_image, queries + tokens, keys + key_pe, keys
    )
    queries = transformer.norm_final_attn(queries + attn)

    iou_pred = decoder.iou_prediction_head(queries[:, 0, :])[:, mask_slice]
    keys = keys.expand(bs, -1, -1)
    rows = None
    if keep is not None:
        rows = keep(iou_pred).nonzero().flatten()
        if rows.numel() < bs:
            queries, keys = queries[rows], keys[rows]
    chosen = range(decoder.num_mask_tokens)[mask_slice]
    hyper_in = torch.stack(
        [decoder.output_hypernetworks_mlps[i](queries[:, 1 + i, :]) for i in chosen], dim=1
    )
    if hyper_in.shape[0] == 0:
        masks = hyper_in.new_empty((0, len(chosen), 4 * h, 4 * w))
    else:
        masks = upscale_masks(decoder, keys, hyper_in, (h, w))
    if rows is None:
        return masks, iou_pred
    return masks, iou_pred, rows
