"""Seeds from a blob detector: one point per roundish object, then one object per seed.

:func:`find_seeds` runs scikit-image's Laplacian-of-Gaussian blob detector
(:func:`skimage.feature.blob_log`) at the one scale that matches the object ``diameter`` in
pixels (sigma = diameter / (2 sqrt 2), since a LoG blob of sigma has radius sigma sqrt 2), on
the image mapped to [0, 1] (grey: the mean of the colour channels). ``threshold`` is
blob_log's: the lowest scale-normalised LoG response a seed needs (higher: fewer, brighter
seeds). Two seeds closer than about a radius are one (blob_log's overlap pruning). ``dark=True``
looks for dark objects on a bright background.

:class:`SeedMaskGenerator` is the automatic mask generator's interface (``generate_steps``) with
seeds instead of a grid: ``segment_everything(..., prompts="seeds", diameter=D)`` uses it, so the
decoder works per object rather than per grid point.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .mask_records import PackedMask
from .point_objects import MAX_OBJECTS, ObjectPrompt, decode_objects_steps

DEFAULT_THRESHOLD = 0.05
MAX_SEEDS = MAX_OBJECTS


def _grey01(image: np.ndarray, dark: bool) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the mean of the channels, stretched between its min and max."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3].mean(axis=-1)
    grey = image.astype(np.float32)
    lo, hi = float(grey.min()), float(grey.max())
    grey = (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)
    return 1.0 - grey if dark else grey


def check_seed_args(diameter: Any, threshold: Any) -> tuple[float, float]:
    """``diameter`` > 0 and ``threshold`` >= 0 as floats, or a ValueError naming them."""
    try:
        d, t = float(diameter), float(threshold)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"diameter and threshold must be numbers, got {diameter!r} and {threshold!r}."
        ) from exc
    if not np.isfinite(d) or d <= 0:
        raise ValueError(f"diameter must be the objects' diameter in pixels (> 0), got {diameter}.")
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}.")
    return d, t


def find_seeds(
    image: Any,
    diameter: float,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    dark: bool = False,
    max_seeds: int = MAX_SEEDS,
) -> np.ndarray:
    """Seed points of blob-like objects of about ``diameter`` pixels.

    Example::

        from napari_mobilesam import find_seeds
        seeds = find_seeds(nuclei, diameter=30)   # (N, 2) (x, y)

    Arguments:
      image: (H, W) or (H, W, C) image, any dtype.
      diameter: object diameter in pixels.
      threshold: the detector's response threshold (see the module docstring).
      dark: objects darker than their background.
      max_seeds: refuse (ValueError) to return more seeds than this.

    Returns:
      (N, 2) float64 seeds as (x, y) = (column, row) in image pixels, all inside the image,
      strongest response first.
    """
    from skimage.feature import blob_log

    d, t = check_seed_args(diameter, threshold)
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}.")
    grey = _grey01(image, dark)
    if not grey.any():
        return np.zeros((0, 2), dtype=np.float64)
    sigma = d / (2.0 * np.sqrt(2.0))
    blobs = blob_log(
        grey, min_sigma=sigma, max_sigma=sigma, num_sigma=1, threshold=t, exclude_border=False
    )
    if len(blobs) > max_seeds:
        raise ValueError(
            f"found {len(blobs)} seeds, more than max_seeds={max_seeds}; raise the threshold "
            f"(now {t}) or the diameter (now {d} px), or raise max_seeds."
        )
    if len(blobs) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    # Strongest first: the LoG response at each seed (blob_log does not return it).
    from scipy.ndimage import gaussian_laplace

    response = -gaussian_laplace(grey, sigma) * sigma**2
    rows, cols = blobs[:, 0].astype(int), blobs[:, 1].astype(int)
    order = np.argsort(-response[rows, cols], kind="stable")
    return np.stack([cols[order], rows[order]], axis=1).astype(np.float64)


@dataclass
class SeedCandidate:
    """One object grown from a seed: its packed mask, predicted IoU and seed (x, y)."""

    mask: PackedMask
    predicted_iou: float
    point: tuple[float, float]


@dataclass
class SeedProgress:
    """Yielded by :meth:`SeedMaskGenerator.generate_steps` (the generator's progress fields)."""

    prompts_done: int
    prompts_total: int


class SeedMaskGenerator:
    """Objects from seeds: :func:`find_seeds`, then one object per seed, decoded in batches.

    Arguments:
      model_or_predictor: a MobileSAM model or a ``SamPredictor`` (its image is replaced).
      diameter, threshold, dark, max_seeds: as in :func:`find_seeds`.
      multimask_output: each object takes the best of 3 candidates (True) or SAM's single mask.
      batch_size: seeds decoded together.
    """

    def __init__(
        self,
        model_or_predictor: Any,
        diameter: float,
        threshold: float = DEFAULT_THRESHOLD,
        dark: bool = False,
        multimask_output: bool = True,
        max_seeds: int = MAX_SEEDS,
        batch_size: int = 32,
    ) -> None:
        from .predictor import SamPredictor

        self.diameter, self.threshold = check_seed_args(diameter, threshold)
        self.dark = bool(dark)
        self.multimask_output = bool(multimask_output)
        self.max_seeds = int(max_seeds)
        self.batch_size = int(batch_size)
        if hasattr(model_or_predictor, "predict_torch"):
            self.predictor = model_or_predictor
        else:
            self.predictor = SamPredictor(model_or_predictor)

    def generate_steps(
        self, image: np.ndarray, embedding: Any = None
    ) -> Generator[SeedProgress, None, list[SeedCandidate]]:
        """Seeds of ``image`` ((H, W, 3) uint8), then their objects; yields after each batch.

        Arguments:
          image: the image the objects are found in.
          embedding: its (1, 256, 64, 64) embedding, if known (else it is encoded).
        """
        seeds = find_seeds(
            image, self.diameter, self.threshold, dark=self.dark, max_seeds=self.max_seeds
        )
        if len(seeds) == 0:
            yield SeedProgress(0, 0)
            return []
        predictor = self.predictor
        size = image.shape[:2]
        if embedding is not None:
            predictor.set_image_embedding(embedding, size)
        else:
            predictor.set_image(image)
        prompts = [
            ObjectPrompt(point_coords=s[None], point_labels=np.ones(1, dtype=np.int64))
            for s in seeds
        ]
        steps = decode_objects_steps(
            predictor, prompts, self.multimask_output, self.batch_size, self.max_seeds
        )
        try:
            while True:
                try:
                    item = next(steps)
                except StopIteration as stop:
                    decoded = stop.value
                    break
                yield SeedProgress(item.prompts_done, item.prompts_total)
        finally:
            steps.close()
            predictor.reset_image()
        return [
            SeedCandidate(decoded.masks[i], float(decoded.scores[i]), (float(x), float(y)))
            for i, (x, y) in enumerate(seeds)
            if decoded.masks[i].area > 0
        ]
