"""Resize images so the longest side is 1024, and map (x, y) coordinates the same way."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class ResizeLongestSide:
    """Resizes images to a longest side of ``target_length``; maps coordinates and boxes to match.

    Coordinates are SAM's (x, y) = (column, row) in pixels; boxes are XYXY. Numpy images use PIL
    bilinear resampling (antialiased), which is what the checkpoint's reference pipeline used.
    """

    def __init__(self, target_length: int = 1024) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """(newh, neww) with the longest side ``long_side_length``, rounded half up.

        Never 0: a 1 x 5000 strip becomes 1 x 1024 (SAM's own rule would give 0 rows and fail).
        """
        scale = long_side_length * 1.0 / max(oldh, oldw)
        newh, neww = oldh * scale, oldw * scale
        return max(1, int(newh + 0.5)), max(1, int(neww + 0.5))

    def apply_image(
        self, image: np.ndarray, original_size: tuple[int, ...] | None = None
    ) -> np.ndarray:
        """(H, W, 3) uint8 -> (newh, neww, 3) uint8.

        ``original_size`` is the (H, W) of the plane when ``image`` is a reduced copy of it
        (see :func:`~.image_conversion.shrink_for_encoder`): the output then has
        the size the full plane would get, so prompts and masks map as for the full plane.
        """
        old_h, old_w = image.shape[:2] if original_size is None else original_size[:2]
        newh, neww = self.get_preprocess_shape(old_h, old_w, self.target_length)
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((neww, newh), Image.BILINEAR)
        return np.array(resized)  # a writable copy: torch refuses read-only buffers

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(..., 2) (x, y) in original pixels -> the resized frame (float64).

        x and y use separate ratios (neww / W, newh / H), as the reference does.
        """
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(B, 4) or (4,) XYXY boxes in original pixels -> (B, 4) in the resized frame."""
        boxes = self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size)
        return boxes.reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float -> (B, 3, newh, neww) with torch's antialiased bilinear resize.

        Close to, but not bit-identical with, :meth:`apply_image` (about 1e-2 difference in the
        embedding); use the numpy path where exactness against the reference matters.
        """
        target = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, target, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(
        self, coords: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """(..., 2) (x, y) tensor in original pixels -> the resized frame (float32)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        coords = deepcopy(coords).to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(
        self, boxes: torch.Tensor, original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """(B, 4) XYXY tensor in original pixels -> (B, 4) in the resized frame."""
        boxes = self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size)
        return boxes.reshape(-1, 4)
