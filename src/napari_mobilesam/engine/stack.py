"""Embeddings for the planes of a stack, and the headless 3D API built on them (no napari).

:class:`StackEmbeddings` hands out the embedding of any plane along one axis from, in order,
memory (:class:`~napari_mobilesam.engine.embedding_cache.EmbeddingCache`), disk
(:class:`~.disk_cache.DiskEmbeddingCache`) or the encoder. Planes are read one
at a time, so dask and zarr arrays larger than memory work. :meth:`StackEmbeddings.precompute`
encodes planes nearest the current one first and skips those already cached, so stopping it
and starting it again resumes where it stopped.

:func:`segment_stack` and :func:`precompute_stack` are the scripting entry points::

    from napari_mobilesam import SamPredictor, build_mobile_sam
    from napari_mobilesam.engine.stack import segment_stack

    predictor = SamPredictor(build_mobile_sam("mobile_sam.pt"))
    objects = segment_stack(predictor, volume, plane=12, points=[[40, 52]], labels=[1])
    objects[0].masks  # {plane index: (H, W) bool}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache
from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.image_conversion import robust_limits, shrink_for_encoder, to_uint8_rgb
from napari_mobilesam.engine.propagation import (
    PropagatedObject,
    PropagationSettings,
    Seed,
    drive,
    nearest_first_planes,
    propagate,
)


def stack_contrast_limits(
    volume: Any, axis: int = 0, samples: int = 8, rgb: bool = False
) -> tuple[float, float]:
    """Robust limits (0.1 / 99.9 percentiles) from up to ``samples`` evenly spaced planes.

    One pair for the whole stack, so every plane is normalised the same way and neighbouring
    planes stay comparable.
    """
    n = volume.shape[axis]
    picks = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
    # Huge planes are sampled reduced (see shrink_for_encoder): memory stays bounded.
    planes = [shrink_for_encoder(np.take(volume, int(i), axis=axis)) for i in picks]
    return robust_limits(np.stack(planes))


@dataclass
class PrecomputeProgress:
    """Yielded after each plane of :meth:`StackEmbeddings.precompute`."""

    plane: int
    done: int
    total: int
    source: str  # "memory", "disk" or "encoder"
    seconds: float


class StackEmbeddings:
    """Embeddings of the planes of ``volume`` along ``axis``.

    Arguments:
      predictor: a ``SamPredictor``; only its model and transform are used here, through a
        private predictor, so encoding never changes the image the caller's predictor holds.
      volume: array-like (numpy, dask, zarr) with the walk axis plus the plane's (rows, cols)
        as its last two axes (three with ``rgb``); any other axes are fixed by ``position``.
      axis: the axis to walk.
      position: index of every non-plane axis (the walk axis' entry is ignored); may be omitted
        for a 3D volume.
      contrast_limits: mapping to uint8 for the whole stack; None computes robust limits once.
      rgb: whether the last axis is colour.
      memory: in-memory LRU; one is made (256 MiB) if None.
      disk: optional on-disk store.
      key: identifies the stack in the memory cache (e.g. a layer id).
    """

    def __init__(
        self,
        predictor: Any,
        volume: Any,
        axis: int = 0,
        position: Sequence[int] | None = None,
        contrast_limits: tuple[float, float] | None = None,
        rgb: bool = False,
        memory: EmbeddingCache | None = None,
        disk: DiskEmbeddingCache | None = None,
        key: Hashable = "stack",
    ) -> None:
        from napari_mobilesam.engine.predictor import SamPredictor

        spatial = volume.ndim - (1 if rgb else 0)
        if spatial < 3:
            raise ValueError(f"A stack needs at least 3 spatial axes, got shape {volume.shape}.")
        n_outer = spatial - 2
        if not 0 <= axis < n_outer:
            raise ValueError(f"axis must be one of the first {n_outer} axes, got {axis}.")
        position = list(position) if position is not None else [0] * n_outer
        if len(position) != n_outer:
            raise ValueError(f"position needs {n_outer} entries (one per non-plane axis).")
        self.volume = volume
        self.axis = axis
        self.position = position
        self.rgb = rgb
        self.n_planes = int(volume.shape[axis])
        self.plane_shape = tuple(int(s) for s in volume.shape[n_outer : n_outer + 2])
        self.contrast_limits = contrast_limits or stack_contrast_limits(volume, axis, rgb=rgb)
        self._encoder = SamPredictor(predictor.model)
        self.memory = memory if memory is not None else EmbeddingCache()
        self.disk = disk
        self.key = key
        self.encoded = 0

    def index(self, plane: int) -> tuple[int, ...]:
        """The index of every non-plane axis for ``plane``."""
        position = list(self.position)
        position[self.axis] = plane
        return tuple(position)

    def model_input(self, plane: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of one plane (reads only that plane; a huge plane comes out
        reduced by :func:`~napari_mobilesam.engine.image_conversion.shrink_for_encoder`)."""
        pixels = shrink_for_encoder(self.volume[self.index(plane)])
        return to_uint8_rgb(pixels, self.contrast_limits, rgb=self.rgb)

    def _memory_key(self, plane: int) -> tuple[Hashable, Hashable, Hashable]:
        return (self.key, self.index(plane), ("contrast", *self.contrast_limits))

    def cached(self, plane: int) -> bool:
        return self._memory_key(plane) in self.memory

    def get(self, plane: int) -> tuple[Any, tuple[int, int]]:
        """(embedding (1, 256, 64, 64), (H, W)) of ``plane``; see :meth:`get_with_source`."""
        embedding, _ = self.get_with_source(plane)
        return embedding, self.plane_shape

    def get_with_source(self, plane: int) -> tuple[Any, str]:
        """The embedding and where it came from: "memory", "disk" or "encoder"."""
        import torch

        if not 0 <= plane < self.n_planes:
            raise IndexError(f"plane {plane} is outside 0..{self.n_planes - 1}.")
        mkey = self._memory_key(plane)
        value = self.memory.get(mkey)
        if value is not None:
            return value, "memory"
        image = self.model_input(plane)
        dkey = self.disk.key(image) if self.disk is not None else None
        stored = self.disk.get(dkey) if self.disk is not None else None
        if stored is not None:
            embedding, source = torch.from_numpy(stored).to(self._encoder.device), "disk"
        else:
            if image.shape[:2] == self.plane_shape:
                self._encoder.set_image(image)
            else:  # reduced from a huge plane
                self._encoder.set_image(image, original_size=self.plane_shape)
            embedding, source = self._encoder.get_image_embedding(), "encoder"
            self._encoder.reset_image()
            self.encoded += 1
            if self.disk is not None:
                self.disk.put(dkey, embedding.float().cpu().numpy())
        self.memory.put(mkey, embedding)
        return embedding, source

    def precompute(
        self, around: int, planes: Iterable[int] | None = None
    ) -> Generator[PrecomputeProgress, None, int]:
        """Embed ``planes`` (default: all), nearest to ``around`` first; returns how many were
        encoded. Planes already in memory are skipped without reading them."""
        order = nearest_first_planes(around, self.n_planes)
        if planes is not None:
            wanted = set(planes)
            order = [p for p in order if p in wanted]
        encoded_before = self.encoded
        for done, plane in enumerate(order, start=1):
            t0 = time.perf_counter()
            source = "memory" if self.cached(plane) else self.get_with_source(plane)[1]
            yield PrecomputeProgress(plane, done, len(order), source, time.perf_counter() - t0)
        return self.encoded - encoded_before


def _terminal_progress(total: int, desc: str) -> Callable[[Any], None]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="plane")

    def update(item: Any) -> None:
        bar.total = item.total
        bar.n = item.done
        bar.refresh()
        if item.done >= item.total:
            bar.close()

    return update


def precompute_stack(
    predictor: Any,
    volume: Any,
    around: int = 0,
    *,
    progress: bool = True,
    **stack_kwargs: Any,
) -> StackEmbeddings:
    """Embed every plane of ``volume`` (nearest to ``around`` first) with a terminal progress bar.

    ``stack_kwargs`` go to :class:`StackEmbeddings` (axis, position, contrast_limits, rgb,
    memory, disk). Returns the filled :class:`StackEmbeddings`.
    """
    stack = StackEmbeddings(predictor, volume, **stack_kwargs)
    on_progress = _terminal_progress(stack.n_planes, "embedding planes") if progress else None
    drive(stack.precompute(around), on_progress)
    return stack


def segment_stack(
    predictor: Any,
    volume: Any,
    plane: int,
    points: Sequence | np.ndarray | None = None,
    labels: Sequence | np.ndarray | None = None,
    box: Sequence | np.ndarray | None = None,
    *,
    settings: PropagationSettings | None = None,
    stack: StackEmbeddings | None = None,
    progress: bool = True,
    **stack_kwargs: Any,
) -> list[PropagatedObject]:
    """Segment one object on ``plane`` from points and/or a box, then follow it through the stack.

    Arguments:
      predictor: a ``SamPredictor``.
      volume: see :class:`StackEmbeddings`.
      plane: index along the walk axis where the prompts are.
      points: (N, 2) (x, y) points in the plane's pixels; labels (N,) 1 = fg, 0 = bg.
      box: (4,) XYXY box.
      settings: stop rules and prompt choice (:class:`PropagationSettings`).
      stack: reuse the embeddings of an earlier call (its volume is used).
      progress: show a terminal progress bar.

    Returns:
      One :class:`PropagatedObject` (``masks`` maps plane index to an (H, W) bool mask).
    """
    stack = stack or StackEmbeddings(predictor, volume, **stack_kwargs)
    embedding, size = stack.get(plane)
    predictor.set_image_embedding(embedding, size)
    kwargs: dict[str, Any] = {}
    if points is not None:
        kwargs["point_coords"] = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        kwargs["point_labels"] = (
            np.ones(len(kwargs["point_coords"]), int) if labels is None else np.asarray(labels)
        )
    if box is not None:
        kwargs["box"] = np.asarray(box, dtype=np.float64)
    if not kwargs:
        raise ValueError("Give points and/or a box on the start plane.")
    masks, _, low_res = predictor.predict(**kwargs, multimask_output=False)
    if not masks[0].any():
        raise ValueError(f"The prompts gave an empty mask on plane {plane}; nothing to follow.")
    seeds = [Seed(masks[0], low_res[0])]
    on_progress = _terminal_progress(stack.n_planes - 1, "propagating") if progress else None
    return drive(
        propagate(predictor, stack.get, stack.n_planes, plane, seeds, settings), on_progress
    )
