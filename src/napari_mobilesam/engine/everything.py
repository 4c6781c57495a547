"""``segment_everything``: automatic instance segmentation of an image or a stack into labels.

2D: the automatic mask generator runs on the image (or on every tile, see
:mod:`~napari_mobilesam.engine.tiling`) and its masks become one label image by the overlap rule
of :func:`~napari_mobilesam.engine.instance_labels.masks_to_labels`.

3D: every chosen plane is segmented the same way, then objects are linked across neighbouring
planes into 3D ids. **Linking rule**: planes are processed in increasing order; an object on
plane z takes the id of the object on plane z - 1 with which it has the highest pixel IoU, if
that IoU is at least ``link_iou`` (0.5 by default) and that object was not already taken by a
better-overlapping object of plane z (one-to-one, best pairs first). Every other object gets a
new id. Planes left out of ``planes`` stay 0 and break the chain.

Stacks are read one plane (or one tile) at a time, so dask and zarr volumes larger than memory
work; without tiles the plane embeddings come from
:class:`~napari_mobilesam.engine.stack.StackEmbeddings` (its memory and disk caches, shared with
interactive segmentation), with tiles from the same caches under a key per tile.

Blank input is not an error here: a constant plane or tile has no objects and gives 0s.

:func:`segment_everything_steps` is the computation as a generator that yields
:class:`EverythingProgress` items and returns the labels; closing it early (or cancelling
:func:`segment_everything`) stops the work and returns nothing partial, which is what a
worker thread with a Cancel button needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .image_conversion import (
    checked_contrast_limits,
    robust_limits,
    shrink_for_encoder,
    to_uint8_rgb,
)
from .instance_labels import _as_packed, masks_to_labels
from .mask_records import PackedMask
from .parameter_checks import checked_number, checked_whole
from .steps import Cancelled, TerminalProgress, drive, map_steps
from .tiling import Tile, deduplicate, keep_for_tile, make_tiles

DEFAULT_HALO = 128  # px on each side of a tile: objects up to about 256 px across stay whole

#: "Segment everything" as the widget and the command line run it by default on a CPU: a
#: quarter of segment-anything's prompts (16 x 16 instead of 32 x 32, about 4x quicker) with
#: slightly lower thresholds, which keep objects that a sparser grid hits less squarely, and
#: objects under 25 visible pixels dropped. segment-anything's own defaults: 32, 0.88, 0.95, 0.
CPU_EVERYTHING_DEFAULTS: dict[str, Any] = {
    "points_per_side": 16,
    "pred_iou_thresh": 0.86,
    "stability_score_thresh": 0.92,
    "min_size": 25,
}


class SegmentationCancelled(Cancelled):
    """Raised by :func:`segment_everything` when ``cancel`` asked it to stop; nothing is
    returned or written. A :class:`~.steps.Cancelled`, like every stopped run."""


@dataclass
class EverythingProgress:
    """Yielded by :func:`segment_everything_steps`.

    Attributes:
      plane: index of the plane being segmented (None for a 2D image).
      planes_done / n_planes: planes finished / to do.
      tile / n_tiles: tile being segmented (0 / 1 without tiling).
      prompts_done / prompts_total: prompts decoded in the current tile.
    """

    plane: int | None
    planes_done: int
    n_planes: int
    tile: int
    n_tiles: int
    prompts_done: int
    prompts_total: int

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1]."""
        within = self.prompts_done / self.prompts_total if self.prompts_total else 0.0
        tile_part = (self.tile + within) / max(self.n_tiles, 1)
        return min(1.0, (self.planes_done + tile_part) / max(self.n_planes, 1))


def _is_rgb(shape: tuple[int, ...], rgb: bool | None) -> bool:
    if rgb is not None:
        return bool(rgb)
    return len(shape) in (3, 4) and shape[-1] in (3, 4) and (len(shape) == 3 or shape[-2] > 4)


def _make_generator(predictor_or_model: Any, generator_params: dict[str, Any]) -> Any:
    from .automatic_mask_generator import SamAutomaticMaskGenerator

    params = dict(generator_params)
    prompts = params.pop("prompts", "grid")
    if prompts == "seeds":  # one object per detected blob instead of a grid
        from .seeds import SeedMaskGenerator

        if params.get("diameter") is None:
            raise ValueError("prompts='seeds' needs diameter=, the objects' diameter in pixels.")
        return SeedMaskGenerator(predictor_or_model, **params)
    if prompts != "grid":
        raise ValueError(f"prompts must be 'grid' or 'seeds', not {prompts!r}.")
    if hasattr(predictor_or_model, "generate") and not hasattr(predictor_or_model, "predict"):
        if generator_params:
            raise ValueError(
                "Generator parameters were given together with a ready generator "
                f"({sorted(generator_params)}); set them on the generator instead."
            )
        return predictor_or_model
    return SamAutomaticMaskGenerator(predictor_or_model, **params)


def segment_everything_steps(
    image_or_stack: Any,
    predictor_or_model: Any,
    *,
    planes: Iterable[int] | None = None,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] = DEFAULT_HALO,
    min_size: int = 0,
    fill_holes: bool = False,
    order: str = "area",
    link_iou: float = 0.5,
    dedup_iou: float = 0.5,
    rgb: bool | None = None,
    contrast_limits: tuple[float, float] | None = None,
    stack: Any = None,
    disk: Any = None,
    **generator_params: Any,
) -> Generator[EverythingProgress, None, np.ndarray]:
    """:func:`segment_everything` as a generator of progress items (same arguments, without
    ``progress`` and ``cancel``); its return value is the label image or volume."""
    shape = tuple(int(s) for s in np.shape(image_or_stack))
    is_rgb = _is_rgb(shape, rgb)
    spatial = len(shape) - (1 if is_rgb else 0)
    if spatial not in (2, 3) or 0 in shape:
        raise ValueError(
            f"Expected one image (H, W[, C]) or a stack (Z, H, W[, C]), got shape {shape}."
        )
    # Checked before any work (the model, the first plane), each by its name.
    link_iou = checked_number("link_iou", link_iou, 0.0, 1.0, low_open=True)
    dedup_iou = checked_number("dedup_iou", dedup_iou, 0.0, 1.0)
    min_size = checked_whole("min_size", min_size, 0, 2**62)
    if order not in ("area", "score", "given"):
        raise ValueError(f"order must be 'area', 'score' or 'given', not {order!r}.")
    if contrast_limits is not None:
        contrast_limits = checked_contrast_limits(contrast_limits)
    plane_shape = shape[spatial - 2 : spatial]
    tiles = make_tiles(plane_shape, tile_shape, halo) if tile_shape is not None else None
    generator = _make_generator(predictor_or_model, generator_params)

    if spatial == 2:
        if planes is not None or stack is not None:
            raise ValueError("planes and stack are for 3D stacks; this image is 2D.")
        limits = contrast_limits
        if limits is None and np.dtype(getattr(image_or_stack, "dtype", np.uint8)) != np.uint8:
            limits = robust_limits(shrink_for_encoder(image_or_stack))
        source = _PlaneSource(image_or_stack, None, limits, is_rgb, None, None)
        labels = yield from _plane_steps(
            generator, source, plane_shape, tiles, None, 0, 1, min_size, fill_holes, order,
            dedup_iou,
        )  # fmt: skip
        return labels

    n_planes = shape[0]
    chosen = _checked_planes(planes, n_planes)
    embeddings = stack
    if (
        embeddings is None
        and hasattr(generator, "predictor")
        and hasattr(generator.predictor, "model")
    ):
        from .stack import StackEmbeddings

        embeddings = StackEmbeddings(
            generator.predictor, image_or_stack, contrast_limits=contrast_limits, rgb=is_rgb,
            disk=disk,
        )  # fmt: skip
    if embeddings is not None:
        limits = embeddings.contrast_limits
    elif contrast_limits is not None:
        limits = contrast_limits
    elif np.dtype(getattr(image_or_stack, "dtype", np.uint8)) == np.uint8:
        limits = None
    else:
        from .stack import stack_contrast_limits

        limits = stack_contrast_limits(image_or_stack, rgb=is_rgb)

    volume = np.zeros((n_planes, *plane_shape), dtype=np.int32)
    previous: tuple[int, np.ndarray] | None = None
    next_id = 1
    for done, plane in enumerate(chosen):
        source = _PlaneSource(image_or_stack, plane, limits, is_rgb, embeddings, generator)
        labels = yield from _plane_steps(
            generator, source, plane_shape, tiles, plane, done, len(chosen), min_size,
            fill_holes, order, dedup_iou,
        )  # fmt: skip
        if previous is not None and previous[0] == plane - 1:
            labels, next_id = link_to_previous(previous[1], labels, next_id, link_iou)
        else:
            labels, next_id = _offset_ids(labels, next_id)
        volume[plane] = labels
        previous = (plane, labels)
    return volume


def segment_everything(
    image_or_stack: Any,
    predictor_or_model: Any,
    *,
    planes: Iterable[int] | None = None,
    tile_shape: int | Sequence[int] | None = None,
    halo: int | Sequence[int] = DEFAULT_HALO,
    min_size: int = 0,
    fill_holes: bool = False,
    order: str = "area",
    link_iou: float = 0.5,
    dedup_iou: float = 0.5,
    rgb: bool | None = None,
    contrast_limits: tuple[float, float] | None = None,
    stack: Any = None,
    disk: Any = None,
    progress: bool | Callable[[EverythingProgress], None] = False,
    cancel: Callable[[], bool] | threading.Event | None = None,
    **generator_params: Any,
) -> np.ndarray:
    """Segment every object of an image (or of every plane of a stack) into instance labels.

    Arguments:
      image_or_stack: (H, W), (H, W, 3) RGB, (Z, H, W) or (Z, H, W, 3); numpy, dask or zarr.
      predictor_or_model: a MobileSAM model, a ``SamPredictor``, or a ready
        ``SamAutomaticMaskGenerator`` (then give no generator parameters).
      planes: for a stack, the plane indices to segment (default all); others stay 0.
      tile_shape: (rows, cols) of the tiles for large images (None: the whole plane at once);
        e.g. 1024. Each tile is seen with ``halo`` extra pixels on every side.
      halo: (rows, cols) or one number; at least the radius of the largest object.
      min_size: objects with fewer pixels are dropped (per plane).
      fill_holes: fill holes inside objects.
      order: overlap rule of :func:`masks_to_labels` ("area": smaller objects on top).
      link_iou: 3D linking threshold (see the module docstring).
      dedup_iou: masks of neighbouring tiles with a higher mask IoU are one object.
      rgb: whether the last axis is colour (None: guessed, 3 or 4 channels).
      contrast_limits: (lo, hi) mapped to 0..255 (None: uint8 as is, other types robust
        limits of the whole image or stack).
      stack: a :class:`~napari_mobilesam.engine.stack.StackEmbeddings` of this volume to reuse
        its cached embeddings.
      disk: a :class:`~napari_mobilesam.engine.disk_cache.DiskEmbeddingCache` for the stack's
        embeddings.
      progress: True for a terminal progress bar, or a function called with every
        :class:`EverythingProgress`.
      cancel: a function returning True (or a ``threading.Event`` that is set) to stop.
      **generator_params: :class:`SamAutomaticMaskGenerator` parameters (points_per_side,
        pred_iou_thresh, ...); segment-anything's defaults otherwise. ``prompts="seeds"``
        with ``diameter=D`` (pixels) prompts with blob-detector seeds instead of a grid, one
        object per seed (:class:`~napari_mobilesam.engine.seeds.SeedMaskGenerator`: also
        ``threshold``, ``dark``, ``multimask_output``, ``max_seeds``); ``order="score"``
        gives overlaps to the higher predicted IoU, as one object per point does.

    Returns:
      (H, W) or (Z, H, W) int32 labels, 0 = background. Ids are 1..N without gaps in 2D; in
      3D a linked object keeps one id through its planes.

    Raises:
      SegmentationCancelled: ``cancel`` asked to stop; nothing is returned.
    """
    steps = segment_everything_steps(
        image_or_stack, predictor_or_model, planes=planes, tile_shape=tile_shape, halo=halo,
        min_size=min_size, fill_holes=fill_holes, order=order, link_iou=link_iou,
        dedup_iou=dedup_iou, rgb=rgb, contrast_limits=contrast_limits, stack=stack, disk=disk,
        **generator_params,
    )  # fmt: skip
    bar = (
        TerminalProgress("segment everything", lambda item: item.fraction)
        if progress is True
        else None
    )
    try:
        return drive(
            steps,
            bar or (progress or None),
            cancel,
            cancelled=lambda: SegmentationCancelled("Automatic segmentation was cancelled."),
        )
    finally:
        if bar is not None:
            bar.close()


def _checked_planes(planes: Iterable[int] | None, n_planes: int) -> list[int]:
    """The chosen plane indices, sorted and unique; a ValueError naming ``planes`` otherwise."""
    if planes is None:
        return list(range(n_planes))
    message = f"planes must be whole-number indices in 0..{n_planes - 1}"
    try:
        values = list(planes)
    except TypeError:
        raise ValueError(f"{message}, got {planes!r}.") from None
    try:
        chosen = sorted({checked_whole("planes", p, 0, n_planes - 1) for p in values})
    except ValueError:
        shown = repr(values) if len(values) <= 8 else f"{values[:8]!r}..."
        raise ValueError(f"{message}, got {shown}.") from None
    if not chosen:
        raise ValueError(f"{message}, got none.")
    return chosen


# ------------------------------------------------------------------------ one plane
class _PlaneSource:
    """Reads one plane (or a tile of it) as uint8 RGB, and finds embeddings for it."""

    def __init__(
        self,
        data: Any,
        plane: int | None,
        limits: tuple[float, float] | None,
        rgb: bool,
        stack: Any,
        generator: Any,
    ) -> None:
        self.data, self.plane, self.limits, self.rgb = data, plane, limits, rgb
        self.stack, self.generator = stack, generator

    def _pixels(self, rows: slice, cols: slice) -> np.ndarray:
        if self.plane is None:
            return np.asarray(self.data[rows, cols])
        return np.asarray(self.data[self.plane, rows, cols])

    def _convert(self, pixels: np.ndarray) -> np.ndarray:
        if self.limits is None and pixels.dtype == np.uint8 and pixels.shape[-1:] == (3,):
            return pixels
        return to_uint8_rgb(pixels, self.limits, rgb=self.rgb)

    def whole(self) -> tuple[np.ndarray, Any]:
        """(H', W', 3) uint8 of the plane (reduced for huge planes) and its embedding or None."""
        if self.stack is not None and self.plane is not None:
            embedding, _ = self.stack.get_with_source(self.plane)
            return self.stack.model_input(self.plane), embedding
        source = self.data if self.plane is None else self.data[self.plane]
        return self._convert(shrink_for_encoder(source)), None

    def tile(self, tile: Tile) -> tuple[np.ndarray, Any]:
        """(h, w, 3) uint8 of a tile's outer box and its cached embedding (or None)."""
        image = self._convert(self._pixels(*tile.outer_slices))
        if self.stack is None or self.plane is None or _is_constant(image):
            return image, None
        return image, _tile_embedding(self.stack, self.generator, self.plane, tile, image)


def _tile_embedding(stack: Any, generator: Any, plane: int, tile: Tile, image: np.ndarray) -> Any:
    """A tile's embedding from the stack's memory cache, its disk cache or the encoder."""
    import torch

    key = (
        stack.key,
        stack.index(plane),
        ("tile", *tile.outer),
        ("contrast", *stack.contrast_limits),
    )
    embedding = stack.memory.get(key)
    if embedding is not None:
        return embedding
    predictor = generator.predictor
    dkey = stack.disk.key(image) if stack.disk is not None else None
    stored = stack.disk.get(dkey) if stack.disk is not None else None
    if stored is not None:
        embedding = torch.from_numpy(stored).to(predictor.device)
    else:
        predictor.set_image(image)
        embedding = predictor.get_image_embedding()
        predictor.reset_image()
        if stack.disk is not None:
            stack.disk.put(dkey, embedding.float().cpu().numpy())
    stack.memory.put(key, embedding)
    return embedding


def _is_constant(image: np.ndarray) -> bool:
    return bool(image.size == 0 or image.min() == image.max())


def _candidates_steps(
    generator: Any,
    image: np.ndarray,
    embedding: Any,
    progress: Callable[[int, int], EverythingProgress],
) -> Generator[EverythingProgress, None, list[tuple[PackedMask, float]]]:
    """Packed masks and scores of one image from our generator (with progress) or any object
    with segment-anything's ``generate``."""
    if hasattr(generator, "generate_steps"):
        found = yield from map_steps(
            generator.generate_steps(image, embedding),
            lambda item: progress(item.prompts_done, item.prompts_total),
        )
        return [(c.mask, c.predicted_iou) for c in found]
    records = generator.generate(image)
    yield progress(1, 1)
    return [_as_packed(r) for r in records]


def _plane_steps(
    generator: Any,
    source: _PlaneSource,
    plane_shape: tuple[int, int],
    tiles: list[Tile] | None,
    plane: int | None,
    planes_done: int,
    n_planes: int,
    min_size: int,
    fill_holes: bool,
    order: str,
    dedup_iou: float,
) -> Generator[EverythingProgress, None, np.ndarray]:
    """Labels of one plane, whole or tile by tile."""
    n_tiles = 1 if tiles is None else len(tiles)

    def at(tile: int) -> Callable[[int, int], EverythingProgress]:
        return lambda done, total: EverythingProgress(
            plane, planes_done, n_planes, tile, n_tiles, done, total
        )

    if tiles is None:
        image, embedding = source.whole()
        if _is_constant(image):
            yield at(0)(1, 1)
            return np.zeros(plane_shape, dtype=np.int32)
        found = yield from _candidates_steps(generator, image, embedding, at(0))
        labels = masks_to_labels(
            [m for m, _ in found] if order != "score" else _scored(found),
            shape=image.shape[:2], min_size=min_size, fill_holes=fill_holes, order=order,
        )  # fmt: skip
        if labels.shape != tuple(plane_shape):  # a huge plane was reduced for the encoder
            labels = _resize_nearest(labels, plane_shape)
        return labels

    masks: list[PackedMask] = []
    scores: list[float] = []
    for tile in tiles:
        image, embedding = source.tile(tile)
        if _is_constant(image):
            yield at(tile.index)(1, 1)
            continue
        found = yield from _candidates_steps(generator, image, embedding, at(tile.index))
        for mask, score in found:
            moved = keep_for_tile(mask, tile, plane_shape)
            if moved is not None:
                masks.append(moved)
                scores.append(score)
    keep = deduplicate(masks, scores, dedup_iou)
    kept = [(masks[i], scores[i]) for i in keep]
    return masks_to_labels(
        [m for m, _ in kept] if order != "score" else _scored(kept),
        shape=plane_shape, min_size=min_size, fill_holes=fill_holes, order=order,
    )  # fmt: skip


@dataclass
class _Scored:
    mask: PackedMask
    predicted_iou: float


def _scored(found: list[tuple[PackedMask, float]]) -> list[_Scored]:
    return [_Scored(m, s) for m, s in found]


def _resize_nearest(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    rows = (np.arange(shape[0]) * labels.shape[0]) // shape[0]
    cols = (np.arange(shape[1]) * labels.shape[1]) // shape[1]
    return labels[rows[:, None], cols[None, :]]


# ------------------------------------------------------------------------ 3D linking
def _offset_ids(labels: np.ndarray, next_id: int) -> tuple[np.ndarray, int]:
    out = np.where(labels > 0, labels + (next_id - 1), 0).astype(np.int32)
    return out, next_id + int(labels.max())


def link_to_previous(
    previous: np.ndarray, current: np.ndarray, next_id: int, link_iou: float = 0.5
) -> tuple[np.ndarray, int]:
    """Give ``current``'s objects (ids 1..n of one plane) the ids of ``previous``'s objects
    they overlap with IoU >= ``link_iou``, one-to-one, best pairs first; new ids from
    ``next_id`` for the rest. Returns the relabelled plane and the next free id."""
    n_current = int(current.max())
    if n_current == 0:
        return current.astype(np.int32), next_id
    mapping = np.zeros(n_current + 1, dtype=np.int64)
    both = (previous > 0) & (current > 0)
    if both.any():
        prev_ids, prev_inverse = np.unique(previous, return_inverse=True)
        prev_sizes = np.bincount(prev_inverse.ravel())
        cur_sizes = np.bincount(current.ravel(), minlength=n_current + 1)
        pair_codes = prev_inverse.ravel()[both.ravel()].astype(np.int64) * (n_current + 1)
        pair_codes += current.ravel()[both.ravel()]
        codes, inter = np.unique(pair_codes, return_counts=True)
        p_index, c_id = codes // (n_current + 1), codes % (n_current + 1)
        iou = inter / (prev_sizes[p_index] + cur_sizes[c_id] - inter)
        used_prev: set[int] = set()
        for k in np.argsort(-iou, kind="stable").tolist():
            if iou[k] < link_iou:
                break
            pid, cid = int(prev_ids[p_index[k]]), int(c_id[k])
            if mapping[cid] or pid in used_prev:
                continue
            mapping[cid] = pid
            used_prev.add(pid)
    for cid in range(1, n_current + 1):
        if not mapping[cid]:
            mapping[cid] = next_id
            next_id += 1
    return mapping[current].astype(np.int32), next_id
