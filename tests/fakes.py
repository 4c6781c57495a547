"""Predictor stand-ins shared by the tests: no weights, instant answers.

- :class:`FakePredictor` records calls; masks are the prompt's box (or a square at the point).
- :class:`ThresholdPredictor` segments by thresholding, so stack logic is testable.
- :class:`ThresholdMaskGenerator` is the automatic mask generator's stand-in: every grid point
  on a bright blob finds that blob.
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


class ThresholdMaskGenerator:
    """A ``SamAutomaticMaskGenerator`` stand-in built on :class:`ThresholdPredictor`.

    A grid of ``points_per_side`` x ``points_per_side`` prompts; every bright connected blob that
    a grid point falls on is one mask (predicted IoU 0.9). ``generate_steps`` yields once per
    batch of prompts, as the real generator does, so progress and cancel are testable. With
    ``split_touching`` (a distance in pixels) touching round blobs are split by a watershed of
    the distance to the background, as a trained model separates touching nuclei.

    Attributes:
        predictor: the :class:`ThresholdPredictor` that "encodes" images (an embedding given to
            ``generate_steps`` is used instead, as the real generator does).
        runs: how many images were segmented.
    """

    def __init__(
        self,
        points_per_side: int = 16,
        threshold: float = 0.5,
        points_per_batch: int = 64,
        predictor: ThresholdPredictor | None = None,
        split_touching: int = 0,
    ) -> None:
        self.points_per_side = points_per_side
        self.split_touching = split_touching
        self.points_per_batch = points_per_batch
        self.predictor = predictor if predictor is not None else ThresholdPredictor(threshold)
        self.runs = 0

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        steps = self.generate_steps(image)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return [
                    {"segmentation": c.mask.to_mask(), "predicted_iou": c.predicted_iou}
                    for c in stop.value
                ]

    def generate_steps(self, image: np.ndarray, embedding: Any = None):
        from types import SimpleNamespace

        from napari_mobilesam.engine.mask_records import PackedMask

        if embedding is not None:
            self.predictor.set_image_embedding(embedding, image.shape[:2])
        else:
            self.predictor.set_image(image)
        plane = self.predictor.plane
        blobs, _ = ndimage.label(plane > self.predictor.threshold)
        if self.split_touching:
            blobs = _split_touching(blobs, self.split_touching)
        n = self.points_per_side
        rows = ((np.arange(n) + 0.5) * plane.shape[0] / n).astype(int)
        cols = ((np.arange(n) + 0.5) * plane.shape[1] / n).astype(int)
        hits = blobs[rows[:, None], cols[None, :]].ravel()
        found: list[int] = []
        total = hits.size
        for start in range(0, total, self.points_per_batch):
            for blob in hits[start : start + self.points_per_batch].tolist():
                if blob and blob not in found:
                    found.append(blob)
            done = min(start + self.points_per_batch, total)
            yield SimpleNamespace(prompts_done=done, prompts_total=total)
        self.runs += 1
        return [
            SimpleNamespace(mask=PackedMask.from_mask(blobs == blob), predicted_iou=0.9)
            for blob in found
        ]


def _split_touching(blobs: np.ndarray, min_distance: int) -> np.ndarray:
    """Blobs split at their necks: a watershed of the distance to the background from its
    peaks at least ``min_distance`` apart."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(blobs > 0)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=blobs, exclude_border=False)
    markers = np.zeros(blobs.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=blobs > 0)
