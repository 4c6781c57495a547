"""A stand-in for ``SamPredictor`` that records calls and answers instantly (test helper)."""

from __future__ import annotations

from typing import Any

import numpy as np


class FakePredictor:
    """Records calls; masks are the prompt's box (or a 3x3 square at the first point)."""

    def __init__(self) -> None:
        self.encoded: list[np.ndarray] = []
        self.restored = 0
        self.calls: list[dict[str, Any]] = []
        self.size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.encoded.append(image)
        self.size = image.shape[:2]

    def get_image_embedding(self) -> np.ndarray:
        return np.zeros((1, 256, 64, 64), dtype=np.float32)

    def set_image_embedding(self, embedding: np.ndarray, original_size: tuple[int, int]) -> None:
        self.restored += 1
        self.size = tuple(original_size)

    def predict(self, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.calls.append(kwargs)
        count = 3 if kwargs["multimask_output"] else 1
        mask = np.zeros(self.size, dtype=bool)
        if kwargs["box"] is not None:
            x0, y0, x1, y1 = np.round(kwargs["box"]).astype(int)
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        else:
            x, y = np.round(kwargs["point_coords"][0]).astype(int)
            mask[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
        scores = np.array([0.2, 0.9, 0.5][:count], dtype=np.float32)
        low_res = np.full((count, 256, 256), float(len(self.calls)), dtype=np.float32)
        return np.repeat(mask[None], count, axis=0), scores, low_res
