"""The image encoder with SAM's preprocessing inside, for tools that feed an (H, W, 3) image.

samexporter's ``--use-preprocess`` encoders, X-AnyLabeling and AnyLabeling run the encoder on
one float32 RGB image of shape (H, W, 3) with values 0-255, already resized by the caller so that
its longest side is at most 1024. Normalisation with SAM's mean and std, the change to channels
first and the zero padding to 1024 x 1024 (at the bottom and right, after normalisation) happen in
the graph; H and W stay dynamic. The output is ``image_embeddings`` (1, 256, 64, 64), the same as
:meth:`napari_mobilesam.model.sam.Sam.preprocess` followed by the image encoder.

Pure torch, written to trace well (sizes come from the input's shape, no Python control flow on
tensor values); see :mod:`napari_mobilesam.engine.export`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sam import Sam

INPUT_NAME = "input_image"  # samexporter's name; the apps read whatever the first input is called
OUTPUT_NAME = "image_embeddings"


class SamOnnxPreprocessEncoder(nn.Module):
    """Normalise, transpose and pad an (H, W, 3) RGB image, then encode it.

    Arguments:
      model: the float32 model (eval mode); its encoder and pixel statistics are shared.
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.img_size = int(model.img_size)
        # (3,) each, so that they broadcast over the last (channel) axis of an HWC image.
        self.register_buffer("pixel_mean", model.pixel_mean.detach().reshape(3).clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().reshape(3).clone(), False)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) RGB 0-255 -> (1, 3, 1024, 1024), normalised and zero-padded."""
        x = ((image - self.pixel_mean) / self.pixel_std).permute(2, 0, 1)
        pad_h = self.img_size - x.shape[1]
        pad_w = self.img_size - x.shape[2]
        return F.pad(x, (0, pad_w, 0, pad_h)).unsqueeze(0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) float32 RGB 0-255, longest side <= 1024 -> (1, 256, 64, 64)."""
        return self.image_encoder(self.preprocess(image))
