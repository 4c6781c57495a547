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

Both take ``cancel=``, a :class:`threading.Event` that another thread may set: the run stops
before its next plane and raises :class:`Cancelled` (nothing partial is returned).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache
from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.image_conversion import (
    checked_contrast_limits,
    robust_limits,
    shown_channels,
    shrink_for_encoder,
    to_uint8_rgb,
)
from napari_mobilesam.engine.prompt_checks import as_float_array, check_labels
from napari_mobilesam.engine.propagation import (
    PropagatedObject,
    PropagationSettings,
    Seed,
    nearest_first_planes,
    propagate,
)
from napari_mobilesam.engine.steps import Cancelled, TerminalProgress, drive


class PlaneSequence:
    """A list or tuple of equally shaped planes seen as one (planes, H, W[, C]) volume.

    Planes are read one at a time, as they are from any array; each may itself be lazy (a
    memmap, a dask or zarr array).
    """

    def __init__(self, planes: Sequence[Any]) -> None:
        if len(planes) == 0:
            raise ValueError("volume is an empty sequence; give at least one plane.")
        shapes = [tuple(int(n) for n in np.shape(plane)) for plane in planes]
        for i, shape in enumerate(shapes):
            if shape != shapes[0]:
                raise ValueError(
                    f"volume is a sequence of planes of different shapes: plane 0 is "
                    f"{shapes[0]}, plane {i} is {shape}. All planes of a stack need one shape; "
                    "crop or pad them first."
                )
        self.planes = planes
        self.shape = (len(planes), *shapes[0])
        self.ndim = len(self.shape)
        self.dtype = np.result_type(
            *(p.dtype if hasattr(p, "dtype") else np.asarray(p).dtype for p in planes)
        )

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> Any:
        index = index if isinstance(index, tuple) else (index,)
        plane = self.planes[int(index[0])]
        plane = plane if hasattr(plane, "shape") else np.asarray(plane)
        return plane[index[1:]] if len(index) > 1 else plane


def as_volume(volume: Any) -> Any:
    """An array-like volume as it is, or a sequence of planes as a :class:`PlaneSequence`."""
    if hasattr(volume, "shape") and hasattr(volume, "__getitem__"):
        return volume  # any array-like indexable by plane; ndim is taken from its shape
    if isinstance(volume, Sequence) and not isinstance(volume, (str, bytes)):
        return PlaneSequence(volume)
    raise TypeError(
        "volume must be an array (numpy, memmap, dask, zarr) or a list of 2D planes, not "
        f"{type(volume).__name__}."
    )


def stack_contrast_limits(
    volume: Any,
    axis: int = 0,
    samples: int = 8,
    rgb: bool = False,
    position: Sequence[int] | None = None,
) -> tuple[float, float]:
    """Robust limits (0.1 / 99.9 percentiles) from up to ``samples`` evenly spaced planes.

    One pair for the whole stack, so every plane is normalised the same way and neighbouring
    planes stay comparable. Planes are read one at a time by indexing (``np.take`` would read
    all of a zarr array for each plane), along ``axis`` at ``position`` on the other non-plane
    axes (0 where omitted). With ``rgb`` the alpha channel is left out, as the model never
    sees it.
    """
    volume = as_volume(volume)
    n_outer = len(volume.shape) - (1 if rgb else 0) - 2
    base = list(position) if position is not None else [0] * n_outer
    n = int(volume.shape[axis])
    picks = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
    per_plane = max(1, (1 << 20) // len(picks))
    samples_taken = []
    for i in picks:
        base[axis] = int(i)
        # Huge planes are sampled reduced (see shrink_for_encoder): memory stays bounded.
        plane = shrink_for_encoder(volume[tuple(base)])
        values = (shown_channels(plane) if rgb else plane).reshape(-1)
        samples_taken.append(values[:: max(1, values.size // per_plane)])
    return robust_limits(np.concatenate(samples_taken))


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
      predictor: a ``SamPredictor`` or anything with its ``set_image`` and
        ``get_image_embedding`` (a wrapper, another runtime); planes are encoded with it, so
        after an encode it holds that plane's image.
      volume: array-like (numpy, memmap, dask, zarr, anything indexable) with the walk axis plus
        the plane's (rows, cols) as its last two axes (three with ``rgb``), or a list of
        equally shaped 2D planes; any other axes are fixed by ``position``.
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
        self.source = volume  # as given, so segment_stack can tell a stack built from it
        volume = as_volume(volume)
        spatial = len(volume.shape) - (1 if rgb else 0)
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
        self.contrast_limits = (
            stack_contrast_limits(volume, axis, rgb=rgb, position=position)
            if contrast_limits is None
            else checked_contrast_limits(contrast_limits)
        )
        self.predictor = predictor
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

    def _check_plane(self, plane: Any, name: str) -> int:
        if not isinstance(plane, (int, np.integer)) or not 0 <= plane < self.n_planes:
            raise IndexError(
                f"{name} must hold plane indices within 0..{self.n_planes - 1}, got {plane!r}."
            )
        return int(plane)

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
            embedding, source = torch.from_numpy(stored), "disk"
            device = getattr(self.predictor, "device", None)
            embedding = embedding if device is None else embedding.to(device)
        else:
            if image.shape[:2] == self.plane_shape:
                self.predictor.set_image(image)
            else:  # reduced from a huge plane
                self.predictor.set_image(image, original_size=self.plane_shape)
            embedding, source = self.predictor.get_image_embedding(), "encoder"
            self.encoded += 1
            if self.disk is not None:
                self.disk.put(dkey, _as_numpy(embedding))
        self.memory.put(mkey, embedding)
        return embedding, source

    def precompute(
        self, around: int, planes: Iterable[int] | None = None
    ) -> Generator[PrecomputeProgress, None, int]:
        """Embed ``planes`` (default: all), nearest to plane ``around`` first; returns how many
        were encoded. Planes already in memory are skipped without reading them."""
        self._check_plane(around, "around")
        order = nearest_first_planes(around, self.n_planes)
        if planes is not None:
            wanted = {self._check_plane(p, "planes") for p in planes}
            order = [p for p in order if p in wanted]
        encoded_before = self.encoded
        for done, plane in enumerate(order, start=1):
            t0 = time.perf_counter()
            source = "memory" if self.cached(plane) else self.get_with_source(plane)[1]
            yield PrecomputeProgress(plane, done, len(order), source, time.perf_counter() - t0)
        return self.encoded - encoded_before


def _as_numpy(embedding: Any) -> np.ndarray:
    """A torch tensor (any device or dtype) or an array as float32 numpy, for the disk store."""
    if hasattr(embedding, "detach"):
        return embedding.detach().float().cpu().numpy()
    return np.asarray(embedding, dtype=np.float32)


def _terminal_progress(total: int, desc: str) -> TerminalProgress:
    return TerminalProgress(desc, lambda item: (item.done, item.total), "planes", total)


def _stop_if_cancelled(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled; nothing is returned.")


def _drive(
    generator: Generator[Any, None, Any],
    on_progress: Callable[[Any], None] | None,
    cancel: threading.Event | None,
    what: str,
) -> Any:
    """:func:`~.steps.drive`, naming the cancelled call and closing the progress bar."""
    try:
        return drive(
            generator,
            on_progress,
            cancel,
            cancelled=lambda: Cancelled(f"{what} was cancelled; nothing is returned."),
        )
    except Cancelled:
        close = getattr(on_progress, "close", None)
        if close is not None:
            close()
        raise


def precompute_stack(
    predictor: Any,
    volume: Any,
    around: int = 0,
    *,
    planes: Iterable[int] | None = None,
    progress: bool = True,
    cancel: threading.Event | None = None,
    **stack_kwargs: Any,
) -> StackEmbeddings:
    """Embed the planes of ``volume`` with a terminal progress bar, starting at plane ``around``.

    Arguments:
      predictor, volume: see :class:`StackEmbeddings`.
      around: the plane to start from (e.g. the one you will prompt first). Planes are encoded
        in order of distance from it, so its neighbours are ready first. It is a starting
        plane, not a radius: every plane is encoded unless ``planes`` says otherwise.
      planes: the planes to encode (default: all), e.g. ``range(around - 5, around + 6)``.
      progress: show a terminal progress bar.
      cancel: a :class:`threading.Event`; once another thread sets it, the run stops before
        the next plane and raises :class:`Cancelled`. Planes encoded before stay in the
        ``memory``/``disk`` caches passed in, so a later call with them resumes.
      stack_kwargs: go to :class:`StackEmbeddings` (axis, position, contrast_limits, rgb,
        memory, disk).

    Returns:
      The filled :class:`StackEmbeddings`.
    """
    _stop_if_cancelled(cancel, "precompute_stack")
    stack = StackEmbeddings(predictor, volume, **stack_kwargs)
    work = stack.precompute(around, planes)
    total = stack.n_planes if planes is None else len(set(planes))
    on_progress = _terminal_progress(total, "embedding planes") if progress else None
    _drive(work, on_progress, cancel, "precompute_stack")
    return stack


def _check_stack(
    stack: StackEmbeddings, volume: Any, predictor: Any, stack_kwargs: dict[str, Any]
) -> None:
    """Refuse a ``stack=`` that does not belong to this call (its volume is what is read)."""
    if volume is not None and volume is not stack.source:
        raise ValueError(
            f"stack= was built from another volume (shape {tuple(stack.volume.shape)}) than the "
            f"one given (shape {tuple(np.shape(volume))}); its planes would be segmented "
            "instead. Pass the volume the stack was built from (or volume=None), or leave "
            "stack= out to build one for this volume."
        )
    if stack_kwargs:
        raise ValueError(
            f"{', '.join(sorted(stack_kwargs))} cannot be used with stack=: the stack already "
            "fixes them. Build a new StackEmbeddings to change them."
        )
    mine, theirs = getattr(stack.predictor, "model", None), getattr(predictor, "model", None)
    if mine is not None and theirs is not None and mine is not theirs:
        raise ValueError(
            "stack= was built with another model than predictor's; its embeddings would be "
            "decoded by the wrong model. Build the stack with this predictor."
        )


def _start_prompts(
    points: Sequence | np.ndarray | None,
    labels: Sequence | np.ndarray | None,
    box: Sequence | np.ndarray | None,
) -> dict[str, np.ndarray]:
    """``predict`` keyword arguments for the start plane, checked with the shared rules."""
    kwargs: dict[str, np.ndarray] = {}
    if points is not None:
        expected = "[x, y] or (N, 2) (x, y) points"
        coords = as_float_array(points, "points", expected)
        if coords.shape == (2,):
            coords = coords[None]
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"points must be {expected}, got shape {coords.shape}.")
        kwargs["point_coords"] = coords
        if labels is None:
            kwargs["point_labels"] = np.ones(len(coords), np.int64)
        else:
            lab = as_float_array(labels, "labels", f"({len(coords)},), one per point")
            if lab.size != len(coords):
                raise ValueError(f"labels must be ({len(coords)},), one per point; got {lab.size}.")
            kwargs["point_labels"] = check_labels(lab.reshape(-1), "labels")
    elif labels is not None:
        raise ValueError("labels were given without points.")
    if box is not None:
        expected = "(4,) XYXY box [x0, y0, x1, y1]"
        kwargs["box"] = as_float_array(box, "box", expected)
        if kwargs["box"].size != 4:
            raise ValueError(f"box must be {expected}, got shape {kwargs['box'].shape}.")
        kwargs["box"] = kwargs["box"].reshape(4)
    return kwargs


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
    cancel: threading.Event | None = None,
    **stack_kwargs: Any,
) -> list[PropagatedObject]:
    """Segment one object on ``plane`` from points and/or a box, then follow it through the stack.

    Arguments:
      predictor: a ``SamPredictor``.
      volume: see :class:`StackEmbeddings` (an array or a list of 2D planes); None with
        ``stack``.
      plane: index along the walk axis where the prompts are.
      points: (N, 2) (x, y) points in the plane's pixels; labels (N,) 1 = fg, 0 = bg.
      box: (4,) XYXY box.
      settings: stop rules, plane range, stop planes and prompt choice
        (:class:`PropagationSettings`).
      stack: reuse the embeddings of an earlier call; it must have been built from this
        ``volume`` (the same object) and the predictor's model.
      progress: show a terminal progress bar.
      cancel: a :class:`threading.Event`; once another thread sets it, the run stops before
        the next plane and raises :class:`Cancelled`.

    Returns:
      One :class:`PropagatedObject` (``masks`` maps plane index to an (H, W) bool mask).
    """
    _stop_if_cancelled(cancel, "segment_stack")
    kwargs = _start_prompts(points, labels, box)
    if not kwargs:
        raise ValueError("Give points and/or a box on the start plane.")
    if stack is not None:
        _check_stack(stack, volume, predictor, stack_kwargs)
    else:
        stack = StackEmbeddings(predictor, volume, **stack_kwargs)
    embedding, size = stack.get(plane)
    _stop_if_cancelled(cancel, "segment_stack")
    predictor.set_image_embedding(embedding, size)
    masks, _, low_res = predictor.predict(**kwargs, multimask_output=False)
    if not masks[0].any():
        raise ValueError(f"The prompts gave an empty mask on plane {plane}; nothing to follow.")
    seeds = [Seed(masks[0], low_res[0])]
    on_progress = _terminal_progress(stack.n_planes - 1, "propagating") if progress else None
    walk = propagate(predictor, stack.get, stack.n_planes, plane, seeds, settings)
    return _drive(walk, on_progress, cancel, "segment_stack")
