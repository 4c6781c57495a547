"""Segment the current plane of an image layer from prompt layers, without any widget.

Two steps, split so that a UI can run the slow one in a thread:

1. :func:`capture_request` reads the layers and the viewer (main thread, fast): which plane,
   which prompts, which normalisation.
2. :func:`run_request` does the model work (any thread): read and convert the plane's pixels,
   encode it unless the cache has it, decode every prompt group. It is a generator that yields a
   :class:`Progress` after each step, so a worker can stop between steps; its return value is a
   :class:`SegmentResult`.

:func:`segment_from_layers` chains both for scripts, and :func:`commit_objects` writes the result
into a Labels layer as one undo step::

    from napari_mobilesam import SamPredictor, build_mobile_sam
    from napari_mobilesam.layers.segment import commit_objects, segment_from_layers

    predictor = SamPredictor(build_mobile_sam("mobile_sam.pt"))
    objects = segment_from_layers(viewer, image, points, shapes, predictor=predictor)
    new_ids = commit_objects(labels, objects)
"""

from __future__ import annotations

import time
from collections.abc import Generator, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from napari.layers import Image, Labels, Points, Shapes

from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.steps import drive
from napari_mobilesam.layers.labels_writer import (
    LabelsError,
    WriteReport,
    check_target,
    write_masks,
)
from napari_mobilesam.layers.layer_prompts import PlanePrompts, PromptGroup, read_plane_prompts
from napari_mobilesam.layers.plane import PlaneRef, current_plane, full_resolution_data
from napari_mobilesam.layers.point_objects_layers import (
    can_batch,
    decode_groups_steps,
    each_point_groups,
)


class PredictorLike(Protocol):
    """The part of ``SamPredictor`` used here."""

    def set_image(self, image: np.ndarray, **kwargs: Any) -> None: ...

    def get_image_embedding(self) -> Any: ...

    def set_image_embedding(self, embedding: Any, original_size: tuple[int, int]) -> None: ...

    def predict(self, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class SegmentRequest:
    """A snapshot of everything needed to segment one plane, taken on the main thread.

    Attributes:
        plane: the plane being segmented.
        prompts: its prompt groups.
        source: the layer's full-resolution array (read later, one plane only).
        rgb: whether ``source`` has a trailing colour axis.
        contrast_limits: the image layer's contrast limits when captured.
        normalisation: hashable description of the pixel mapping (part of the cache key).
    """

    plane: PlaneRef
    prompts: PlanePrompts
    source: Any
    rgb: bool
    contrast_limits: tuple[float, float]
    normalisation: Hashable

    @property
    def cache_key(self) -> tuple[str, Hashable, Hashable]:
        """Key of this plane's embedding in an :class:`EmbeddingCache`."""
        return (self.plane.layer_id, self.plane.key, self.normalisation)


@dataclass(eq=False)
class SegmentedObject:
    """One object segmented on one plane, with every candidate mask SAM proposed.

    Attributes:
        plane: where the mask lies.
        prompt: the prompts that produced it.
        masks: (C, H, W) bool candidates (C is 3 with multimask output, else 1).
        scores: (C,) predicted IoU of each candidate.
        low_res_logits: (C, 256, 256) float32 logits of each candidate.
        chosen: index of the candidate in use (the best score at first).
        multimask_output: how the candidates were asked for.
        embedding_key: the cache key of the embedding it was decoded from (plane and pixel
            mapping); an object is only reused or refined on the same embedding.
        refined_from: the earlier object whose chosen logits were this one's ``mask_input``
            (None: decoded from its prompts alone); a project record keeps the chain, so a
            replay decodes the same way.
    """

    plane: PlaneRef
    prompt: PromptGroup
    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
    chosen: int = 0
    multimask_output: bool = True
    embedding_key: Hashable = None
    refined_from: SegmentedObject | None = None

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool mask of the chosen candidate."""
        return self.masks[self.chosen]

    @property
    def score(self) -> float:
        """Predicted IoU of the chosen candidate."""
        return float(self.scores[self.chosen])

    @property
    def low_res(self) -> np.ndarray:
        """(256, 256) logits of the chosen candidate (SAM's ``mask_input`` for refinement)."""
        return self.low_res_logits[self.chosen]

    def __repr__(self) -> str:
        return (
            f"SegmentedObject(plane={self.plane.slice_index}, candidates={len(self.scores)}, "
            f"chosen={self.chosen}, score={self.score:.3f}, pixels={int(self.mask.sum())})"
        )

    def cycle(self) -> int:
        """Choose the next candidate (wrapping around); returns its index."""
        self.chosen = (self.chosen + 1) % len(self.scores)
        return self.chosen


@dataclass
class Progress:
    """What :func:`run_request` yields after each step."""

    stage: str
    seconds: float
    cache_hit: bool = False
    fraction: float | None = None  # for long stages (a weights download): share done


@dataclass
class SegmentResult:
    """What :func:`run_request` returns."""

    objects: list[SegmentedObject] = field(default_factory=list)
    encode_seconds: float | None = None
    decode_seconds: float = 0.0
    cache_hit: bool = False


def normalisation_key(image_layer: Image) -> tuple[Any, ...]:
    """How the layer's pixels are mapped to the model's uint8 RGB input (a cache key part)."""
    low, high = (float(v) for v in image_layer.contrast_limits)
    return ("contrast", low, high, bool(image_layer.rgb))


def capture_request(
    viewer_or_dims: Any,
    image_layer: Image,
    points_layer: Points | None = None,
    shapes_layer: Shapes | None = None,
) -> SegmentRequest:
    """Read the current plane and its prompts from the layers (call on the main thread)."""
    plane = current_plane(viewer_or_dims, image_layer)
    prompts = read_plane_prompts(viewer_or_dims, image_layer, plane, points_layer, shapes_layer)
    limits = tuple(float(v) for v in image_layer.contrast_limits)
    return SegmentRequest(
        plane=plane,
        prompts=prompts,
        source=full_resolution_data(image_layer),
        rgb=bool(image_layer.rgb),
        contrast_limits=(limits[0], limits[1]),
        normalisation=normalisation_key(image_layer),
    )


def model_input(request: SegmentRequest) -> np.ndarray:
    """(h, w, 3) uint8 RGB of the request's plane, mapped with the captured contrast limits.

    (h, w) is the plane's (H, W), except for planes of 4096 pixels or more on a side: those are
    reduced by block averaging while they are read (a band of rows at a time, lazily for dask
    and zarr), so memory stays bounded by the reduced plane; the encoder only sees 1024 pixels.
    """
    from napari_mobilesam.engine.image_conversion import shrink_for_encoder, to_uint8_rgb

    index = request.plane.data_index + ((slice(None),) if request.rgb else ())
    # Not np.asarray: a lazy plane stays lazy until shrink_for_encoder reads it band by band.
    pixels = shrink_for_encoder(request.plane.orient(request.source[index]))
    return to_uint8_rgb(pixels, contrast_limits=request.contrast_limits, rgb=request.rgb)


def _match_previous(
    group: PromptGroup,
    embedding_key: Hashable,
    multimask_output: bool,
    previous: Sequence[SegmentedObject],
) -> tuple[SegmentedObject | None, SegmentedObject | None]:
    """(unchanged earlier object to reuse, earlier object to refine from) for one group."""
    for earlier in previous:
        if earlier.embedding_key != embedding_key or earlier.multimask_output != multimask_output:
            continue
        if group.same_prompts(earlier.prompt):
            return earlier, None
        if group.extends(earlier.prompt):
            return None, earlier
    return None, None


def ensure_embedding(
    request: SegmentRequest, predictor: PredictorLike, cache: EmbeddingCache | None
) -> bool:
    """Make the predictor hold the embedding of the request's plane; True on a cache hit."""
    if cache is not None:
        cached = cache.get(request.cache_key)
        if cached is not None:
            embedding, original_size = cached
            predictor.set_image_embedding(embedding, original_size)
            return True
    epoch = None if cache is None else cache.epoch
    image = model_input(request)
    disk = _disk_store(cache, predictor)
    key = disk.key(image) if disk is not None else None
    stored = disk.get(key) if disk is not None else None
    if stored is not None:
        import torch

        predictor.set_image_embedding(torch.from_numpy(stored), request.plane.shape)
    elif image.shape[:2] == request.plane.shape:
        predictor.set_image(image)
    else:  # reduced from a huge plane: prompts and masks still use the plane's pixels
        predictor.set_image(image, original_size=request.plane.shape)
    if disk is not None and stored is None:
        disk.put(key, predictor.get_image_embedding().float().cpu().numpy())
    if cache is not None:
        # Not stored if the layer, its contrast or the model changed while this one encoded.
        embedding = (predictor.get_image_embedding(), request.plane.shape)
        cache.put(request.cache_key, embedding, epoch=epoch)
    return stored is not None


def _disk_store(cache: EmbeddingCache | None, predictor: PredictorLike) -> Any:
    """The on-disk store for this model when the cache has a disk folder, else None."""
    model = getattr(predictor, "model", None)
    if cache is None or cache.disk_folder is None or model is None:
        return None
    from napari_mobilesam.engine.disk_cache import model_fingerprint

    # One store per folder and model, kept by the cache: a failing folder warns only once.
    return cache.disk_store(model_fingerprint(model))


def run_request(
    request: SegmentRequest,
    predictor: PredictorLike,
    cache: EmbeddingCache | None = None,
    multimask_output: bool = True,
    previous: Sequence[SegmentedObject] = (),
    each_point: bool = False,
) -> Generator[Progress, None, SegmentResult]:
    """Encode (or fetch) the plane and decode every prompt group.

    Args:
        request: from :func:`capture_request`.
        predictor: a ``SamPredictor``; this function changes the image it holds.
        cache: embeddings by plane; without one every call encodes.
        multimask_output: ask SAM for 3 candidates per object (the best scored is chosen).
        previous: objects of the last run. On the same embedding (same plane, same contrast
            limits), a group whose prompts are unchanged keeps its object (and chosen candidate)
            without decoding; a group that only gained points is decoded with the earlier chosen
            logits as ``mask_input``, which is how SAM refines.
        each_point: one object per positive point outside the rectangles (see
            :mod:`~napari_mobilesam.layers.point_objects_layers`), all decoded in batches; each
            object keeps only its chosen candidate.

    Yields:
        :class:`Progress` after encoding and after each decoded object (each batch).

    Returns:
        :class:`SegmentResult` with one object per prompt group, in group order.
    """
    result = SegmentResult()
    groups = request.prompts.groups
    if each_point:
        groups = tuple(each_point_groups(groups))
    if not groups:
        return result
    plan = [_match_previous(g, request.cache_key, multimask_output, previous) for g in groups]
    if any(reuse is None for reuse, _ in plan):
        start = time.perf_counter()
        result.cache_hit = ensure_embedding(request, predictor, cache)
        result.encode_seconds = time.perf_counter() - start
        yield Progress("encoded", result.encode_seconds, result.cache_hit)
    batched: dict[int, tuple] = {}
    if each_point and can_batch(predictor):
        todo = [i for i, (reuse, _) in enumerate(plan) if reuse is None]
        found, result.decode_seconds = yield from decode_groups_steps(
            predictor,
            [groups[i] for i in todo],
            [None if plan[i][1] is None else plan[i][1].low_res[None] for i in todo],
            multimask_output,
            lambda seconds: Progress("decoded", seconds),
        )
        batched = dict(zip(todo, found, strict=True))
    for index, (group, (reuse, refine_from)) in enumerate(zip(groups, plan, strict=True)):
        if reuse is not None:
            # Same prompts give the same masks; keeping the object also keeps the candidate
            # the user picked.
            result.objects.append(replace(reuse, prompt=group))
            continue
        start = time.perf_counter()
        mask_input = None if refine_from is None else refine_from.low_res[None, :, :]
        if index in batched:
            masks, scores, low_res = batched[index]
        else:
            masks, scores, low_res = predictor.predict(
                **group.predict_kwargs(),
                mask_input=mask_input,
                multimask_output=multimask_output,
            )
        seconds = time.perf_counter() - start
        result.decode_seconds += 0.0 if index in batched else seconds
        result.objects.append(
            SegmentedObject(
                plane=request.plane,
                prompt=group,
                masks=np.asarray(masks, dtype=bool),
                scores=np.asarray(scores, dtype=np.float32),
                low_res_logits=np.asarray(low_res, dtype=np.float32),
                chosen=int(np.argmax(scores)),
                multimask_output=multimask_output,
                embedding_key=request.cache_key,
                refined_from=refine_from,
            )
        )
        if index not in batched:
            yield Progress("decoded", seconds)
    return result


def segment_from_layers(
    viewer_or_dims: Any,
    image_layer: Image,
    points_layer: Points | None = None,
    shapes_layer: Shapes | None = None,
    *,
    predictor: PredictorLike,
    cache: EmbeddingCache | None = None,
    multimask_output: bool = True,
    previous: Sequence[SegmentedObject] = (),
    each_point: bool = False,
) -> list[SegmentedObject]:
    """Segment the prompts on the viewer's current plane of ``image_layer``, synchronously.

    Args:
        viewer_or_dims: a ``napari.Viewer`` or its ``Dims`` (current slice, displayed axes).
        image_layer: the image to segment (2D, nD, RGB, multiscale or lazy).
        points_layer: point prompts; ``features['positive']`` (bool) tells positive from
            negative, missing means positive.
        shapes_layer: rectangles used as box prompts; other shape types are ignored.
        predictor: a ``SamPredictor``.
        cache: an :class:`EmbeddingCache` to reuse embeddings across calls.
        multimask_output: three candidates per object instead of one.
        previous: objects of an earlier call, to refine (see :func:`run_request`).
        each_point: one object per positive point outside the rectangles, negative points
            added to each, decoded in batches; where objects overlap, the higher predicted
            IoU keeps the pixel (commit :func:`~.point_objects_layers.resolved_objects`).

    Returns:
        One :class:`SegmentedObject` per prompt group (each rectangle with the points inside
        it; the points outside all rectangles together), empty when there are no prompts.
    """
    request = capture_request(viewer_or_dims, image_layer, points_layer, shapes_layer)
    generator = run_request(request, predictor, cache, multimask_output, previous, each_point)
    return drive(generator).objects


def commit_report(
    labels_layer: Labels,
    objects: Sequence[SegmentedObject],
    protect: bool = True,
    image_layer: Image | None = None,
) -> WriteReport:
    """Like :func:`commit_objects`, returning the full :class:`WriteReport`."""
    if image_layer is not None:
        check_target(labels_layer, image_layer)
    else:
        _check_planes_fit(labels_layer, objects)
    masks = [(obj.plane, obj.mask) for obj in objects]
    return write_masks(labels_layer, masks, protect, sources=objects)


def _check_planes_fit(labels_layer: Labels, objects: Sequence[SegmentedObject]) -> None:
    """Without an image to check against, at least every mask must land inside the layer.

    Otherwise numpy fails deep inside the write with an index error, or a float layer would
    take fractional ids.
    """
    data = labels_layer.data
    dtype = np.dtype(getattr(data, "dtype", np.float64))
    if dtype.kind not in "iu":
        raise LabelsError(
            f"Labels layer '{labels_layer.name}' has dtype {dtype}; label ids need an integer "
            "dtype."
        )
    shape = tuple(int(s) for s in np.shape(data))
    for obj in objects:
        plane = obj.plane
        fits = len(plane.slice_index) == len(shape) and all(
            (index is None and size == plane.shape[plane.displayed.index(axis)])
            or (index is not None and 0 <= index < size)
            for axis, (index, size) in enumerate(zip(plane.slice_index, shape, strict=True))
        )
        if not fits:
            raise LabelsError(
                f"Labels layer '{labels_layer.name}' has shape {shape}, which does not hold a "
                f"{plane.shape} mask at slice {plane.slice_index}; pass image_layer= to check "
                "the layer against the image, or create one with create_aligned_labels(image)."
            )


def commit_objects(
    labels_layer: Labels,
    objects: Sequence[SegmentedObject],
    protect: bool = True,
    image_layer: Image | None = None,
) -> list[int]:
    """Write the objects' chosen masks into ``labels_layer``, each with a new id, one undo step.

    Args:
        labels_layer: integer Labels with the image's spatial shape.
        objects: from :func:`segment_from_layers`.
        protect: write only where the layer is 0 (existing labels are kept).
        image_layer: when given, the Labels layer is first checked to line up with it.

    Returns:
        The new ids, one per object that wrote at least one pixel.
    """
    return commit_report(labels_layer, objects, protect, image_layer).ids
