"""Segment everything on an image layer's planes, through the widget's model and caches.

No Qt here. The widget runs :func:`everything_steps` in a thread worker and writes its result
with :func:`~napari_mobilesam.layers.label_image_writer.write_label_image`.

Each plane is read and normalised as the interactive path reads it (the layer's contrast limits
captured in the :class:`~napari_mobilesam.layers.segment.SegmentRequest`), so an untiled plane
takes its embedding from the same :class:`~napari_mobilesam.engine.embedding_cache.EmbeddingCache`
as clicks and propagation: a plane clicked on (or precomputed) is not encoded again, and one
segmented here is ready for the clicks that fix its objects. The work itself is
:func:`napari_mobilesam.engine.everything.segment_everything_steps`, one plane at a time; in a
stack, objects are linked from plane to plane with the engine's rule
(:func:`~napari_mobilesam.engine.everything.link_to_previous`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.everything import (
    CPU_EVERYTHING_DEFAULTS,
    EverythingProgress,
    link_to_previous,
    segment_everything_steps,
)
from napari_mobilesam.layers.plane import PlaneRef
from napari_mobilesam.layers.segment import SegmentRequest, ensure_embedding, model_input
from napari_mobilesam.layers.stack_layers import default_walk_axis, plane_at

# Planes up to this many pixels on their longest side are segmented whole by default; the model
# sees 1024 pixels anyway, so larger planes are cut into tiles of this size instead.
AUTO_TILE = 1024


@dataclasses.dataclass(frozen=True)
class EverythingSettings:
    """What the "Segment everything" section sets.

    Attributes:
        points_per_side: the prompt grid has this many points per side (per tile).
        pred_iou_thresh: keep masks whose predicted IoU is above this.
        stability_score_thresh: keep masks whose stability score is at least this.
        min_size: drop objects with fewer visible pixels (per plane).
        tile_size: tiles of this many pixels a side; 0 = automatic (whole planes up to
            ``AUTO_TILE`` pixels, tiles of ``AUTO_TILE`` above); None = never tile.
        whole_stack: every plane along the stack axis instead of the current plane only.
        decoder_precision: "fp32", or "bf16" (opt-in where the device has native bf16: faster,
            approximate; see :mod:`napari_mobilesam.engine.decoder_precision`).
    """

    points_per_side: int = CPU_EVERYTHING_DEFAULTS["points_per_side"]
    pred_iou_thresh: float = CPU_EVERYTHING_DEFAULTS["pred_iou_thresh"]
    stability_score_thresh: float = CPU_EVERYTHING_DEFAULTS["stability_score_thresh"]
    min_size: int = CPU_EVERYTHING_DEFAULTS["min_size"]
    tile_size: int | None = 0
    whole_stack: bool = False
    decoder_precision: str = "fp32"

    def generator_params(self) -> dict[str, Any]:
        """Keyword arguments of ``SamAutomaticMaskGenerator``."""
        params: dict[str, Any] = {
            "points_per_side": self.points_per_side,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
        }
        if self.decoder_precision != "fp32":  # only then: stand-ins without it keep working
            params["decoder_precision"] = self.decoder_precision
        return params

    def tile_shape(self, plane_shape: Sequence[int]) -> int | None:
        """The tile size for planes of ``plane_shape`` (None: the whole plane at once)."""
        if self.tile_size is None:
            return None
        if self.tile_size == 0:
            return AUTO_TILE if max(plane_shape) > AUTO_TILE else None
        return int(self.tile_size)


# The CPU defaults trade a quarter of segment-anything's prompts for speed (about 4x quicker);
# slightly lower thresholds keep objects that a sparser grid hits less squarely.
CPU_DEFAULTS = EverythingSettings()
SAM_DEFAULTS = dataclasses.replace(
    CPU_DEFAULTS, points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95
)


@dataclasses.dataclass
class EverythingJob:
    """What one run needs, captured on the main thread.

    Attributes:
        request: the current plane (its source array, contrast limits, cache key).
        planes: the planes to segment, in increasing order along ``axis``.
        axis: the stack axis (None for one plane).
        settings: the section's values.
    """

    request: SegmentRequest
    planes: list[PlaneRef]
    axis: int | None
    settings: EverythingSettings


class PlaneLabels(dict):
    """Label images by :class:`PlaneRef` (a plain ``dict`` to the writers), with the settings
    and contrast limits of the run that made them (what a project folder records)."""

    def __init__(
        self, settings: EverythingSettings | None = None, contrast_limits: Any = None
    ) -> None:
        super().__init__()
        self.settings = settings
        self.contrast_limits = None if contrast_limits is None else list(contrast_limits)


@dataclasses.dataclass
class EverythingResult:
    """The label image of every segmented plane, with ids shared across linked planes.

    Attributes:
        labels: per plane, (H, W) int32 labels (0 = background), ids 1..N over all planes.
        constant_planes: planes skipped because all their pixels map to one value.
    """

    labels: dict[PlaneRef, np.ndarray]
    constant_planes: int = 0

    @property
    def n_objects(self) -> int:
        return max((int(plane.max()) for plane in self.labels.values()), default=0)


def plan_job(request: SegmentRequest, settings: EverythingSettings) -> EverythingJob:
    """The planes a run covers: the request's plane, or its whole stack along the last
    non-displayed axis (Z in (Z, Y, X) and (T, Z, Y, X) data) at the current position of the
    other axes. A 2D image has one plane either way."""
    if settings.points_per_side < 1:
        raise ValueError(f"points per side must be at least 1, got {settings.points_per_side}.")
    if settings.tile_size not in (None, 0) and settings.tile_size < 64:
        raise ValueError(
            f"tile size must be 0 (automatic) or at least 64, got {settings.tile_size}."
        )
    plane = request.plane
    if not settings.whole_stack or all(index is None for index in plane.slice_index):
        return EverythingJob(request, [plane], None, settings)
    axis = default_walk_axis(plane)
    n_planes = _axis_length(request, axis)
    planes = [plane_at(plane, axis, z) for z in range(n_planes)]
    return EverythingJob(request, planes, axis, settings)


def _axis_length(request: SegmentRequest, axis: int) -> int:
    return int(np.shape(request.source)[axis])


class _WithEmbedding:
    """A mask generator that starts from a known embedding of the whole image.

    :func:`segment_everything_steps` takes any object with segment-anything's ``generate``; this
    one hands the embedding from the shared cache to the generator's ``generate_steps``.
    """

    def __init__(self, generator: Any, embedding: Any) -> None:
        self.generator = generator
        self.embedding = embedding

    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        return self.generator.generate(image)

    def generate_steps(self, image: np.ndarray, embedding: Any = None) -> Generator[Any, None, Any]:
        return self.generator.generate_steps(
            image, self.embedding if embedding is None else embedding
        )


def everything_steps(
    job: EverythingJob, generator: Any, cache: EmbeddingCache | None
) -> Generator[EverythingProgress, None, EverythingResult]:
    """Segment every plane of ``job`` with ``generator`` (a ``SamAutomaticMaskGenerator`` or a
    stand-in with ``generate_steps``); yields progress, returns the labels.

    The generator's ``predictor`` encodes planes that are not cached yet; give it a predictor of
    its own (sharing the model): the generator keeps its embedding between steps, and whatever
    else uses the model between two steps (a click) must not replace it.
    """
    settings = job.settings
    request = job.request
    labels = PlaneLabels(settings, request.contrast_limits)
    constant = 0
    previous: tuple[int, np.ndarray] | None = None
    next_id = 1
    for done, plane in enumerate(job.planes):
        index = None if job.axis is None else plane.slice_index[job.axis]
        moved = dataclasses.replace(request, plane=plane)
        image = model_input(moved)
        tile_shape = settings.tile_shape(plane.shape)
        if image.min() == image.max():
            # Nothing to find, and encoding a blank plane would only cost time.
            constant += 1
            plane_labels = np.zeros(plane.shape, dtype=np.int32)
            yield EverythingProgress(index, done, len(job.planes), 0, 1, 1, 1)
        else:
            if tile_shape is None:
                ensure_embedding(moved, generator.predictor, cache)
                source: Any = _WithEmbedding(generator, generator.predictor.get_image_embedding())
            else:
                source = generator
            pixels = plane.orient(request.source[_data_index(moved)])
            steps = segment_everything_steps(
                pixels, source, tile_shape=tile_shape, min_size=settings.min_size,
                rgb=request.rgb, contrast_limits=request.contrast_limits,
            )  # fmt: skip
            plane_labels = yield from _renumbered_steps(steps, index, done, len(job.planes))
        if index is not None and previous is not None and previous[0] == index - 1:
            plane_labels, next_id = link_to_previous(previous[1], plane_labels, next_id)
        else:
            count = int(plane_labels.max(initial=0))
            plane_labels = np.where(plane_labels > 0, plane_labels + (next_id - 1), 0)
            plane_labels = plane_labels.astype(np.int32)
            next_id += count
        labels[plane] = plane_labels
        if index is not None:
            previous = (index, plane_labels)
    return EverythingResult(labels, constant)


def _data_index(request: SegmentRequest) -> tuple[Any, ...]:
    return request.plane.data_index + ((slice(None),) if request.rgb else ())


def _renumbered_steps(
    steps: Generator[EverythingProgress, None, np.ndarray],
    plane: int | None,
    done: int,
    total: int,
) -> Generator[EverythingProgress, None, np.ndarray]:
    """One plane's steps, their progress restated for the whole run (plane index along the
    stack axis, planes done before this one)."""
    try:
        while True:
            try:
                item = next(steps)
            except StopIteration as stop:
                return stop.value
            yield dataclasses.replace(item, plane=plane, planes_done=done, n_planes=total)
    finally:
        steps.close()  # a cancelled run stops the engine's work at once
