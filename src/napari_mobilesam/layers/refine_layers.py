"""Refine a Labels layer with MobileSAM: every label of a plane prompts one object.

Three steps, split for a UI that runs the slow one in a thread (as
:mod:`~napari_mobilesam.layers.segment` does):

1. :func:`capture_refine` (main thread): which planes (the current one, or every plane along the
   first hidden axis), a snapshot of the source labels of those planes, the image's pixel mapping.
2. :func:`refine_steps` (any thread): per plane, the embedding (through the shared
   :class:`~napari_mobilesam.engine.embedding_cache.EmbeddingCache`), then
   :func:`~napari_mobilesam.engine.refine.refine_plane_steps`; yields
   :class:`~napari_mobilesam.engine.refine.RefineProgress`, returns the refined planes.
3. :func:`write_refined` (main thread): into the target Labels layer as one undo step, keeping
   each source id or with new ids above the target's largest; pixels that already hold a label
   are kept. The source layer is only read, never written: it cannot be the target.

Rules of the refinement itself (boxes, mask prompt, overlaps, lost labels) are those of
:mod:`~napari_mobilesam.engine.refine`.

Example::

    request = capture_refine(viewer, image, cellpose_labels, whole_stack=True)
    refined = drive(refine_steps(request, predictor))
    report = write_refined(target, refined, keep_ids=True)
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.refine import RefineProgress, refine_plane_steps
from napari_mobilesam.layers.label_image_writer import (
    LabelImageReport,
    _check_plane,
    write_label_image,
)
from napari_mobilesam.layers.labels_writer import (
    LabelsError,
    Written,
    _same_placement,
    check_target,
    observed_write,
    writable_data,
)
from napari_mobilesam.layers.layer_prompts import PlanePrompts
from napari_mobilesam.layers.plane import PlaneRef, current_plane, full_resolution_data
from napari_mobilesam.layers.segment import SegmentRequest, ensure_embedding, normalisation_key


@dataclass(eq=False)
class RefineRequest:
    """What one refinement needs, captured on the main thread.

    Attributes:
      planes: the planes to refine, each with its (H, W) source labels (a copy, screen order).
      source_name: the source layer's name (for messages).
      requests: per plane, the request that finds its embedding.
    """

    planes: list[tuple[PlaneRef, np.ndarray]]
    source_name: str
    requests: list[SegmentRequest] = field(default_factory=list)


@dataclass
class RefinedPlanes:
    """What :func:`refine_steps` returns: refined labels per plane (source ids), lost ids."""

    planes: dict[PlaneRef, np.ndarray] = field(default_factory=dict)
    lost: list[tuple[Any, int]] = field(default_factory=list)
    objects: int = 0


def _check_source(source: Labels, image: Image) -> None:
    shape = tuple(int(s) for s in np.shape(source.data))
    image_shape = tuple(int(s) for s in np.shape(full_resolution_data(image)))
    if image.rgb:
        image_shape = image_shape[:-1]
    if getattr(source, "multiscale", False):
        raise LabelsError(f"Labels layer '{source.name}' is multiscale; choose a single-scale one.")
    if shape != image_shape or not _same_placement(source, image):
        raise LabelsError(
            f"Labels layer '{source.name}' (shape {shape}) is not on the grid of image "
            f"'{image.name}' (shape {image_shape}, with its scale and translate); refine "
            "labels made for this image."
        )


def _stack_planes(plane: PlaneRef, shape: tuple[int, ...]) -> list[PlaneRef]:
    """The planes along the first hidden axis through ``plane`` (just ``plane`` for 2D)."""
    hidden = [axis for axis, index in enumerate(plane.slice_index) if index is not None]
    if not hidden:
        return [plane]
    axis = hidden[0]
    out = []
    for i in range(shape[axis]):
        index = list(plane.slice_index)
        index[axis] = i
        out.append(PlaneRef(plane.layer_id, tuple(index), plane.displayed, plane.shape))
    return out


def capture_refine(
    viewer_or_dims: Any, image: Image, source: Labels, whole_stack: bool = False
) -> RefineRequest:
    """Read the planes to refine and their source labels (call on the main thread).

    Raises:
      LabelsError: the source is not on the image's grid, or holds no label on those planes.
    """
    _check_source(source, image)
    plane = current_plane(viewer_or_dims, image)
    data = source.data
    planes = _stack_planes(plane, tuple(np.shape(data))) if whole_stack else [plane]
    snapshot = []
    for p in planes:
        labels = np.array(p.orient(np.asarray(data[p.data_index])))  # a copy: only read
        if labels.dtype.kind not in "iub":
            raise LabelsError(
                f"Labels layer '{source.name}' has dtype {labels.dtype}; ids must be integers."
            )
        if labels.any():
            snapshot.append(
                (p, labels.astype(labels.dtype if labels.dtype.kind != "b" else np.uint8))
            )
    if not snapshot:
        where = "any plane of the stack" if whole_stack and len(planes) > 1 else "this plane"
        raise LabelsError(
            f"Labels layer '{source.name}' has no label on {where}: nothing to refine."
        )
    limits = tuple(float(v) for v in image.contrast_limits)
    requests = [
        SegmentRequest(
            plane=p,
            prompts=PlanePrompts(),
            source=full_resolution_data(image),
            rgb=bool(image.rgb),
            contrast_limits=(limits[0], limits[1]),
            normalisation=normalisation_key(image),
        )
        for p, _ in snapshot
    ]
    return RefineRequest(snapshot, source.name, requests)


def refine_steps(
    request: RefineRequest,
    predictor: Any,
    cache: EmbeddingCache | None = None,
    *,
    mask_prompt: bool = True,
    multimask_output: bool = False,
) -> Generator[RefineProgress, None, RefinedPlanes]:
    """Refine every captured plane (any thread); closing the generator stops between batches."""
    result = RefinedPlanes()
    n = len(request.planes)
    for done, ((plane, labels), seg) in enumerate(
        zip(request.planes, request.requests, strict=True)
    ):
        index = plane.slice_index if n > 1 else None
        yield RefineProgress(index, done, n, 0, 0)
        ensure_embedding(seg, predictor, cache)
        out, lost, count = yield from refine_plane_steps(
            predictor, labels, mask_prompt=mask_prompt, multimask_output=multimask_output,
            progress=lambda d, t, done=done, index=index: RefineProgress(index, done, n, d, t),
        )  # fmt: skip
        result.planes[plane] = out
        result.lost += [(plane.slice_index, i) for i in lost]
        result.objects += count
    return result


def write_refined(
    target: Labels, refined: RefinedPlanes, keep_ids: bool = True, source: Labels | None = None,
    image: Image | None = None,
) -> LabelImageReport:  # fmt: skip
    """Write refined planes into ``target`` as one undo step; pixels holding a label are kept.

    Arguments:
      keep_ids: write each object with its source id; False: new ids above the target's
        largest (consecutive, in increasing order of the source ids; one source id on several
        planes keeps one new id).
      source: the source layer, refused as the target (it is never modified).
      image: when given, the target is first checked to line up with it.

    Raises:
      LabelsError: the target is the source, cannot be written, or cannot hold the ids;
        nothing is written then.
    """
    if source is not None and target is source:
        raise LabelsError(
            f"The source Labels layer '{source.name}' is never modified; choose another target "
            "or a new layer."
        )
    if image is not None:
        check_target(target, image)
    if not keep_ids:
        return write_label_image(target, refined.planes, protect=True, mode="refine")
    data = writable_data(target)
    report = LabelImageReport()
    writes = []
    found: set[int] = set()
    top = int(max((int(p.max()) for p in refined.planes.values()), default=0))
    if top > int(np.iinfo(data.dtype).max):
        raise LabelsError(
            f"Labels layer '{target.name}' has dtype {data.dtype}, too small for id {top}; "
            "nothing was written. Choose new ids or a new layer."
        )
    for plane, labels in refined.planes.items():
        _check_plane(target, plane, labels)
        inside = labels > 0
        indices = plane.mask_indices(inside)
        ids = labels[inside]
        found.update(np.unique(ids).tolist())
        free = data[indices] == 0
        report.protected += int(np.count_nonzero(~free))
        writes.append((tuple(axis[free] for axis in indices), ids[free]))
    kept: set[int] = set()
    # Observers of the layer (a project folder) hear of the write before this returns.
    with observed_write(target) as outcome:
        with target.block_history():
            for indices, ids in writes:
                if ids.size:
                    target.data_setitem(indices, ids.astype(data.dtype), refresh=False)
                    report.written += int(ids.size)
                    kept.update(np.unique(ids).tolist())
        target.refresh()
        report.found, report.skipped, report.ids = len(found), len(found - kept), sorted(kept)
        if kept:
            same = {int(i): int(i) for i in kept}
            written = Written("label_image", [refined.planes], report.ids, True, same, "refine")
            outcome.append(written)
    return report
