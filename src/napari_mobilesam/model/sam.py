"""The Sam module: image encoder + prompt encoder + mask decoder, with pre/post-processing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Segment Anything with a TinyViT image encoder (MobileSAM).

    The model owns normalisation, padding to the square encoder input and mask upscaling;
    :class:`napari_mobilesam.SamPredictor` speaks numpy on top of it.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: TinyViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.optimized = False  # True after modeling.inference.optimize_for_inference
        # Autocast dtype for the image encoder (None: float32). float16 on CUDA by default; its
        # error bound against the float32 reference is tested in tests/test_half_precision.py.
        self.encoder_dtype: torch.dtype | None = None
        # Constants, not weights: kept out of the checkpoint (persistent=False).
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a (B, 3, h, w) RGB image on the 0-255 scale, then zero-pad to 1024x1024.

        Padding comes after normalisation, so padded pixels are 0 in normalised units.
        """
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
        chunk: int = 16,
    ) -> torch.Tensor:
        """Upscale (B, C, 256, 256) logits to (B, C, H, W) of the original image.

        Same result as SAM's "bilinear to 1024x1024, crop to ``input_size``, bilinear to
        ``original_size``", computed without the padded part: only the low-res rows and
        columns that reach the crop are upsampled (plus one, so edge interpolation is unchanged
        and the scale stays exactly 4). Masks are processed ``chunk`` at a time so a batch of
        prompts never holds all its 1024-sized intermediates at once.

        Arguments:
          input_size: (h, w) of the resized image before padding.
          original_size: (H, W) of the image given by the user.
        """
        low_h, low_w = masks.shape[-2:]
        factor = self.img_size // low_h
        rows = min(low_h, -(-input_size[0] // factor) + 1)
        cols = min(low_w, -(-input_size[1] // factor) + 1)
        b, c = masks.shape[:2]
        flat = masks[..., :rows, :cols].reshape(b * c, 1, rows, cols)
        # A bilinear resize to the same size returns its input unchanged (every source index
        # is whole, every weight 1 or 0): images whose longer side is 1024 skip it.
        same_size = tuple(input_size) == tuple(original_size)
        step = max(1, chunk)
        if same_size and b * c <= step and (rows * factor, cols * factor) == tuple(input_size):
            # One chunk, nothing to crop: the upsampled logits are the result as they are.
            up = F.interpolate(flat, input_size, mode="bilinear", align_corners=False)
            return up.reshape(b, c, *original_size)
        out = masks.new_empty((b * c, 1, *original_size))
        for start, part in zip(range(0, b * c, step), flat.split(step, dim=0), strict=True):
            up = F.interpolate(
                part, (rows * factor, cols * factor), mode="bilinear", align_corners=False
            )
            up = up[..., : input_size[0], : input_size[1]]
            if not same_size:
                up = F.interpolate(up, original_size, mode="bilinear", align_corners=False)
            out[start : start + part.shape[0]] = up
        return out.reshape(b, c, *original_size)
