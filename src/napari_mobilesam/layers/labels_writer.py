"""Write segmented masks into a napari Labels layer, with undo and protection of existing labels.

Writes go through ``Labels.data_setitem`` inside ``Labels.block_history()``, so one commit of any
number of objects is one undo step and ``labels.undo()`` restores the previous values exactly.
Writing to ``labels.data`` directly would bypass the undo history.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from napari.layers import Labels, Layer

from napari_mobilesam.layers.plane import PlaneRef, spatial_shape

DEFAULT_LABELS_DTYPE = np.uint32


class LabelsError(ValueError):
    """The Labels layer cannot take the masks (wrong dtype or shape, misaligned, full)."""


@dataclass
class WriteReport:
    """What one commit did.

    Attributes:
        ids: the label id given to each written object, in order.
        written: pixels set per written object.
        protected: pixels per written object that were left alone because they held a label
            before this commit.
        skipped: objects that wrote nothing (empty mask, or every pixel protected).
        protected_in_skipped: pixels left alone in the skipped objects.
        overlapped: pixels left alone, over all objects, because an earlier object of this same
            commit had taken them (not counted as protected: they held no label before).
    """

    ids: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    protected: list[int] = field(default_factory=list)
    skipped: int = 0
    protected_in_skipped: int = 0
    overlapped: int = 0

    @property
    def protected_total(self) -> int:
        """Pixels left alone across all objects, including the skipped ones."""
        return sum(self.protected) + self.protected_in_skipped


@dataclass(frozen=True)
class Written:
    """What one write put into a Labels layer, as its observers (a project folder) see it.

    Attributes:
        kind: ``"objects"`` (:func:`write_objects`) or ``"label_image"`` (a label image).
        sources: per object, what the caller passed (a ``SegmentedObject``, a propagated
            ``PlaneMasks``, a ``{plane: mask}`` mapping); for a label image, its
            ``{plane: label image}`` mapping alone.
        ids: per source object, the id it was written with (None: it wrote nothing); for a
            label image, the new ids.
        id_map: label image only: id in the label image -> id written.
        protect: whether existing labels were kept.
        mode: the caller's name for the run (``"refine"``, ``"seeds"``...), or None.
    """

    kind: str
    sources: Sequence[Any]
    ids: Sequence[int | None]
    protect: bool
    id_map: Mapping[int, int] = field(default_factory=dict)
    mode: str | None = None


class WriteObserver(Protocol):
    """Told before and after every write of this module's writers into one Labels layer."""

    def write_started(self, labels: Labels) -> None: ...

    def write_finished(self, labels: Labels, written: Written | None) -> None: ...


# Observers per layer; a removed layer takes its observers with it.
_OBSERVERS: weakref.WeakKeyDictionary[Labels, list[WriteObserver]] = weakref.WeakKeyDictionary()


def add_write_observer(labels: Labels, observer: WriteObserver) -> None:
    """Call ``observer`` around every write into ``labels`` (it must not raise)."""
    _OBSERVERS.setdefault(labels, []).append(observer)


def remove_write_observer(labels: Labels, observer: WriteObserver) -> None:
    """Stop calling ``observer`` for ``labels``."""
    observers = _OBSERVERS.get(labels, [])
    if observer in observers:
        observers.remove(observer)


@contextlib.contextmanager
def observed_write(labels: Labels) -> Iterator[list[Written]]:
    """Tell the layer's observers that a write starts; the block appends what it wrote (or
    nothing, when it failed or wrote nothing), and the observers hear it when the block ends,
    before the writer returns."""
    observers = list(_OBSERVERS.get(labels, ()))
    for observer in observers:
        observer.write_started(labels)
    outcome: list[Written] = []
    try:
        yield outcome
    finally:
        for observer in observers:
            observer.write_finished(labels, outcome[0] if outcome else None)


def placement_kwargs(layer: Layer) -> dict[str, object]:
    """A layer's scale, translate, rotate, shear and affine: what puts its pixels in the world."""
    return {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine,
    }


def create_aligned_labels(
    image: Layer, name: str | None = None, dtype: np.dtype | type = DEFAULT_LABELS_DTYPE
) -> Labels:
    """A zero-filled Labels layer with the image's spatial shape and transforms (not added).

    ``uint32`` holds about four billion ids, so committing never runs out in practice.
    """
    data = np.zeros(spatial_shape(image), dtype=dtype)
    return Labels(data, name=name or f"{image.name} labels", **placement_kwargs(image))


def _same_placement(a: Layer, b: Layer) -> bool:
    """Whether data index i of ``a`` and of ``b`` land on the same world position."""
    if a.ndim != b.ndim:
        return False
    probes = np.vstack([np.zeros(a.ndim), np.eye(a.ndim)])
    return all(np.allclose(a.data_to_world(p), b.data_to_world(p), atol=1e-6) for p in probes)


def check_target(labels: Labels, image: Layer) -> None:
    """Raise :class:`LabelsError` unless masks of ``image`` planes can be written to ``labels``."""
    if getattr(labels, "multiscale", False):
        raise LabelsError(f"Labels layer '{labels.name}' is multiscale; choose a single-scale one.")
    if not isinstance(labels.data, np.ndarray):
        raise LabelsError(
            f"Labels layer '{labels.name}' holds {type(labels.data).__name__} data; "
            "writing needs an in-memory numpy array (use np.asarray on the data)."
        )
    dtype = labels.data.dtype
    if not np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        raise LabelsError(
            f"Labels layer '{labels.name}' has dtype {dtype}; label ids need an integer dtype."
        )
    image_shape = spatial_shape(image)
    if tuple(labels.data.shape) != image_shape:
        raise LabelsError(
            f"Labels layer '{labels.name}' has shape {tuple(labels.data.shape)} but image "
            f"'{image.name}' has {image_shape}; choose a matching layer or create a new one."
        )
    if not _same_placement(labels, image):
        raise LabelsError(
            f"Labels layer '{labels.name}' has other scale/translate/rotation than image "
            f"'{image.name}'; its pixels do not line up with the image's."
        )


def writable_data(labels: Labels) -> np.ndarray:
    """The layer's data, if a commit can write it: an in-memory, writable integer numpy array.

    Raises:
        LabelsError: saying what to do otherwise (dask or zarr data, a float dtype, read-only).
    """
    data = labels.data
    if not isinstance(data, np.ndarray):
        raise LabelsError(
            f"Labels layer '{labels.name}' holds {type(data).__name__} data; writing needs an "
            "in-memory numpy array (use np.asarray on the data)."
        )
    if data.dtype.kind not in "iu":
        raise LabelsError(
            f"Labels layer '{labels.name}' has dtype {data.dtype}; label ids need an integer dtype."
        )
    if not data.flags.writeable:
        raise LabelsError(
            f"Labels layer '{labels.name}' is read-only; give it a writable copy "
            "(layer.data = layer.data.copy())."
        )
    return data


def next_label_id(labels: Labels) -> int:
    """``max + 1`` of the layer's data (1 for an empty layer).

    Raises:
        LabelsError: when that id does not fit the layer's dtype.
    """
    data = np.asarray(labels.data)
    candidate = int(data.max()) + 1 if data.size else 1
    candidate = max(candidate, 1)
    _check_fits(labels, candidate)
    return candidate


def _check_fits(labels: Labels, label_id: int) -> None:
    limit = int(np.iinfo(labels.data.dtype).max)
    if label_id > limit:
        raise LabelsError(
            f"Labels layer '{labels.name}' is full: dtype {labels.data.dtype} holds ids up to "
            f"{limit}. Convert it to uint32 (layer.data = layer.data.astype('uint32'))."
        )


def write_masks(
    labels: Labels,
    masks: Sequence[tuple[PlaneRef, np.ndarray]],
    protect: bool = True,
    *,
    sources: Sequence[Any] | None = None,
    mode: str | None = None,
) -> WriteReport:
    """Write each mask with a new id (``max + 1``, then counting up), as one undo step.

    Args:
        labels: the target layer, already checked with :func:`check_target`.
        masks: ``(plane, mask)`` pairs; ``mask`` is (H, W) bool in the plane's screen order.
        protect: when true, only pixels that are 0 are written, so committed objects and other
            labels are never overwritten; an object overlapping an earlier one of the same commit
            keeps the earlier one's pixels too.
        sources, mode: as in :func:`write_objects`.
    """
    objects = [{plane: mask} for plane, mask in masks]
    return write_objects(labels, objects, protect, sources=sources, mode=mode)


def _plane_fits(plane: PlaneRef, mask_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether a mask of ``mask_shape`` on ``plane`` lies inside data of ``shape``."""
    if len(plane.slice_index) != len(shape) or mask_shape != tuple(plane.shape):
        return False
    shown = [axis for axis, index in enumerate(plane.slice_index) if index is None]
    if shown != sorted(plane.displayed):
        return False
    sizes = tuple(shape[axis] for axis in plane.displayed)
    return sizes == tuple(plane.shape) and all(
        0 <= index < size
        for index, size in zip(plane.slice_index, shape, strict=True)
        if index is not None
    )


def _planned_writes(
    labels: Labels, objects: Sequence[Mapping[PlaneRef, np.ndarray]]
) -> list[list[tuple[np.ndarray, ...]]]:
    """Per object, the data indices of each of its masks; raises before anything is written.

    Raises:
        LabelsError: when the layer cannot be written (not an integer numpy array, read-only)
            or any mask of any object does not lie inside it (another layer's planes, a mask
            of the wrong shape, a slice outside the layer).
    """
    data = writable_data(labels)
    shape = data.shape
    planned: list[list[tuple[np.ndarray, ...]]] = []
    for number, obj in enumerate(objects):
        writes = []
        for plane, mask in obj.items():
            mask = np.asarray(mask)
            if not _plane_fits(plane, mask.shape, shape):
                raise LabelsError(
                    f"Object {number + 1} of {len(objects)} does not fit Labels layer "
                    f"'{labels.name}' of shape {shape}: its {mask.shape} mask is for a "
                    f"{tuple(plane.shape)} plane at slice {plane.slice_index}. Nothing was "
                    "written; commit objects of the image this layer was made for "
                    "(create_aligned_labels(image))."
                )
            writes.append(plane.mask_indices(mask.astype(bool, copy=False)))
        planned.append(writes)
    return planned


def write_objects(
    labels: Labels,
    objects: Sequence[Mapping[PlaneRef, np.ndarray]],
    protect: bool = True,
    *,
    sources: Sequence[Any] | None = None,
    mode: str | None = None,
) -> WriteReport:
    """Write objects that may span several planes: one new id per object, one undo step.

    Args:
        labels: the target layer, already checked with :func:`check_target`.
        objects: per object, its (H, W) bool masks by plane (e.g. a propagated 3D object).
        protect: as in :func:`write_masks`.
        sources: per object, what it was made from (a ``SegmentedObject``...), for observers
            of the layer (see :class:`Written`); default: ``objects`` themselves.
        mode: the run's name for observers (``"refine"``...); default: from the sources.
    """
    report = WriteReport()
    if not objects:
        return report
    # Everything is checked before the first write: a failed commit writes nothing (a write
    # that fails halfway would leave part of the commit in the layer and outside undo).
    planned = _planned_writes(labels, objects)
    label_id = first_id = next_label_id(labels)
    _check_fits(labels, label_id + len(objects) - 1)
    assigned: list[int | None] = []
    with observed_write(labels) as outcome:
        _write_planned(labels, planned, protect, report, label_id, first_id, assigned)
        if report.ids:
            given = list(objects) if sources is None else list(sources)
            outcome.append(Written("objects", given, assigned, protect, mode=mode))
    return report


def _write_planned(
    labels: Labels,
    planned: list[list[tuple[np.ndarray, ...]]],
    protect: bool,
    report: WriteReport,
    label_id: int,
    first_id: int,
    assigned: list[int | None],
) -> None:
    """The writes of :func:`write_objects`, as one undo step; ``assigned`` gets each object's
    id (None for one that wrote nothing)."""
    with labels.block_history():
        for obj in planned:
            written = protected = 0
            for indices in obj:
                if protect:
                    values = labels.data[indices]
                    free = values == 0
                    # Ids from first_id up were given by this commit: such pixels overlap an
                    # earlier object of it; they held no label before.
                    ours = int(np.count_nonzero(values >= first_id))
                    report.overlapped += ours
                    protected += int(np.count_nonzero(~free)) - ours
                    indices = tuple(axis[free] for axis in indices)
                if indices[0].size:
                    labels.data_setitem(indices, label_id, refresh=False)
                    written += int(indices[0].size)
            if written == 0:
                report.skipped += 1
                report.protected_in_skipped += protected
                assigned.append(None)
                continue
            report.ids.append(label_id)
            report.written.append(written)
            report.protected.append(protected)
            assigned.append(label_id)
            label_id += 1
    labels.refresh()
