"""Predictor stand-ins shared by the tests: no weights, instant answers.

- :class:`FakePredictor` records calls; masks are the prompt's box (or a square at the point).
- :class:`ThresholdPredictor` segments by thresholding, so stack logic is testable.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy import ndimage


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


class ThresholdPredictor:
    """A predictor stand-in that segments by thresholding (test helper).

    On each plane it returns the bright connected component the prompt points at: the one under a
    positive point, or the one overlapping the box or the previous logits most. That makes stack
    logic testable without real weights. Works through ``set_image`` (the "embedding" is the image
    itself) and through ``set_image_embedding``.
    """

    def __init__(self, threshold: float = 0.5, delay_s: float = 0.0) -> None:
        self.threshold = threshold
        self.delay_s = delay_s
        self.plane: np.ndarray | None = None
        self.encoded = 0
        self.calls = 0

    def set_image(self, image: np.ndarray) -> None:
        time.sleep(self.delay_s)
        self.encoded += 1
        self.plane = np.asarray(image, dtype=np.float32)
        if self.plane.ndim == 3:
            self.plane = self.plane[..., 0] / 255.0

    def get_image_embedding(self) -> np.ndarray:
        return self.plane.copy()

    def set_image_embedding(self, embedding, original_size) -> None:
        assert tuple(embedding.shape) == tuple(original_size)
        self.plane = np.asarray(embedding)

    def predict(
        self, point_coords=None, point_labels=None, box=None, mask_input=None,
        multimask_output=False, **_,
    ):  # fmt: skip
        time.sleep(self.delay_s)
        self.calls += 1
        labels, n = ndimage.label(self.plane > self.threshold)
        score = np.zeros(n + 1)
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            ids, counts = np.unique(labels[y0 : y1 + 1, x0 : x1 + 1], return_counts=True)
            score[ids] += counts
        if mask_input is not None:
            prev = ndimage.zoom(mask_input[0] > 0, np.array(self.plane.shape) / 256, order=0)
            score += np.bincount(labels[prev], minlength=n + 1)
        if point_coords is not None:
            for (x, y), lab in zip(point_coords, point_labels, strict=True):
                score[labels[int(y), int(x)]] += 1e6 if lab == 1 else -1e6
        score[0] = 0
        best = int(np.argmax(score))
        mask = labels == best if best and score[best] > 0 else np.zeros(self.plane.shape, bool)
        low = ndimage.zoom(mask.astype(np.float32), 256 / np.array(mask.shape), order=0)
        count = 3 if multimask_output else 1
        return (
            np.repeat(mask[None], count, axis=0),
            np.full(count, 0.9, np.float32),
            np.repeat((low * 20 - 10)[None], count, axis=0),
        )
