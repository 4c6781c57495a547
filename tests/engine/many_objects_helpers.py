"""Shared by the many-objects tests: a predictor on a small non-square image, and the check
that a batched mask is the one-at-a-time mask."""

from __future__ import annotations

import numpy as np

# Golden tolerance: a pixel may differ only where the one-at-a-time logit is this close to 0.
BORDERLINE = 1e-3


def blob_image(height: int = 72, width: int = 120, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: noise with a few bright discs (non-square on purpose)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width), dtype=np.int64)
    rows, cols = np.mgrid[:height, :width]
    for r, c in ((18, 25), (50, 80), (20, 95), (55, 30)):
        image[(rows - r) ** 2 + (cols - c) ** 2 <= 64] += 150
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def assert_same_as_single(predictor, mask: np.ndarray, score: float, kwargs: dict, multimask):
    """``mask``/``score`` equal SamPredictor.predict for ``kwargs`` alone, chosen by argmax."""
    logits, scores, _ = predictor.predict(**kwargs, multimask_output=multimask, return_logits=True)
    best = int(np.argmax(scores))
    single = logits[best] > 0
    differ = mask != single
    assert not (differ & (np.abs(logits[best]) >= BORDERLINE)).any(), int(differ.sum())
    assert abs(float(score) - float(scores[best])) < 1e-4
