"""The prompt encoder + mask decoder behind SAM's official ONNX decoder interface.

Tools that run SAM as two ONNX files (segment-anything's ONNX demo, samexporter, AnyLabeling,
Label Studio's SAM backend) call the decoder with these inputs:

* ``image_embeddings`` (1, 256, 64, 64) float32, from the encoder file;
* ``point_coords`` (1, N, 2) float32, (x, y) = (column, row) in the resized 1024 frame
  (``x * neww / W``, ``y * newh / H``), before SAM's +0.5 pixel-centre shift;
* ``point_labels`` (1, N) float32: 1 foreground, 0 background, 2 and 3 the top-left and
  bottom-right corners of a box, -1 a padding point (one (0, 0) point labelled -1 is appended
  when the prompt has no box, exactly as SAM's prompt encoder does);
* ``mask_input`` (1, 1, 256, 256) float32 low-res logits, used when ``has_mask_input`` is 1;
* ``has_mask_input`` (1,) float32, 1 or 0;
* ``orig_im_size`` (2,) float32, (H, W) of the original image;

and get ``masks`` (1, C, H, W) logits at the original size (threshold at 0), ``iou_predictions``
(1, C) and ``low_res_masks`` (1, C, 256, 256). Which masks, and so C, is chosen when the graph is
built (:data:`MASK_OUTPUTS`):

* ``"all"``: the decoder's 4 masks, the single-object token first (C = 4), what
  segment-anything's ``export_onnx_model.py`` writes by default;
* ``"single"``: one mask chosen by segment-anything's ``select_masks`` rule (C = 1), what it
  writes with ``--return-single-mask``: score = IoU + (N - 2.5) x [1000, 0, 0, 0] with N the
  number of points given, the padding point and box corners included; the argmax wins. One click
  (+ padding) gives the best of the 3 candidates, 3 or more points give the single-object mask;
* ``"first"``: the single-object mask, token 0 (C = 1), what ``multimask_output=False`` gives;
* ``"multimask"``: the 3 candidates, tokens 1..3 (C = 3), what ``multimask_output=True`` gives.

This module is pure torch: it only has to trace well (no Python control flow on tensor values),
see :mod:`napari_mobilesam.engine.export`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sam import Sam

INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")

# Which of the decoder's 4 mask tokens a graph returns: the name, then the number of masks.
MASK_OUTPUTS = {"all": 4, "single": 1, "first": 1, "multimask": 3}


class SamOnnxDecoder(nn.Module):
    """SAM's ONNX decoder interface on a loaded MobileSAM model (shares its modules).

    Arguments:
      model: the float32 model (eval mode).
      masks: which masks the graph returns, one of :data:`MASK_OUTPUTS` (see the module text).
    """

    def __init__(self, model: Sam, masks: str = "all") -> None:
        super().__init__()
        if masks not in MASK_OUTPUTS:
            raise ValueError(f"masks must be one of {tuple(MASK_OUTPUTS)}, got {masks!r}.")
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = int(model.img_size)
        self.masks = masks
        # select_masks' weights: only the single-object token gets the point-count bonus.
        reweight = torch.zeros(1, self.mask_decoder.num_mask_tokens)
        reweight[0, 0] = 1000.0
        self.register_buffer("score_reweight", reweight, persistent=False)

    def embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """(1, N, 2) coordinates in the 1024 frame and (1, N) labels -> (1, N, 256) tokens.

        Box corners arrive as points labelled 2 and 3, so points, boxes and their mix are one
        path; the result equals the prompt encoder's token for token.
        """
        encoder = self.prompt_encoder
        coords = (point_coords + 0.5) / self.img_size  # shift to the centre of the pixel
        tokens = encoder.pe_layer._pe_encoding(coords)
        labels = point_labels.unsqueeze(-1)
        # A padding point carries no position: its token is the learned "not a point" alone.
        tokens = torch.where(labels == -1, encoder.not_a_point_embed.weight, tokens)
        for label, table in enumerate(encoder.point_embeddings):
            tokens = tokens + (labels == label).to(tokens.dtype) * table.weight
        return tokens

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """(1, 1, 256, 256) logits and a (1,) 0/1 flag -> (1, 256, 64, 64) dense embedding.

        Blended arithmetically rather than with control flow, so one graph serves both cases;
        with a flag of exactly 0 or 1 the unused term adds exact zeros.
        """
        encoder = self.prompt_encoder
        flag = has_mask_input.reshape(1, 1, 1, 1)
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return flag * encoder.mask_downscaling(mask_input) + (1 - flag) * no_mask

    def upscale(self, low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """(1, C, 256, 256) logits -> (1, C, H, W), for the (H, W) held in ``orig_im_size``.

        Every size is computed from the tensor, so the traced graph follows the input's aspect
        ratio rather than the one of the example used for tracing. The resized size is computed
        in float64 with the same operations as ``ResizeLongestSide.get_preprocess_shape``, so the
        crop is the very one the encoder input was made with (float32 can round a half the other
        way), and never 0 for a thin strip.
        """
        size = orig_im_size.to(torch.float64)
        scale = self.img_size / torch.max(size)
        resized = torch.clamp(torch.floor(size * scale + 0.5), min=1).to(torch.int64)
        masks = F.interpolate(
            low_res, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        masks = masks[..., : resized[0], : resized[1]]
        original = orig_im_size.to(torch.int64)
        return F.interpolate(
            masks, size=(original[0], original[1]), mode="bilinear", align_corners=False
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See the module docstring for the shapes; returns (masks, iou_predictions, low_res)."""
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        low_res, iou = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )
        if self.masks == "single":
            low_res, iou = self.select_masks(low_res, iou, point_labels)
        elif self.masks != "all":
            chosen = slice(1, None) if self.masks == "multimask" else slice(0, 1)
            low_res, iou = low_res[:, chosen], iou[:, chosen]
        return self.upscale(low_res, orig_im_size), iou, low_res

    def select_masks(
        self, low_res: torch.Tensor, iou: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 4, 256, 256) logits and (1, 4) IoUs -> the one mask segment-anything's export picks.

        The point count N comes from the labels' shape as a tensor (padding point and box corners
        included, as in SAM), so the rule follows N in the graph rather than the tracing example.
        """
        num_points = torch.ones_like(point_labels).sum(dim=1, keepdim=True)  # (1, 1)
        score = iou + (num_points - 2.5) * self.score_reweight
        best = torch.argmax(score, dim=1, keepdim=True)  # (1, 1)
        iou = torch.gather(iou, 1, best)
        index = best.reshape(-1, 1, 1, 1).expand(-1, 1, *low_res.shape[-2:])
        return torch.gather(low_res, 1, index), iou
