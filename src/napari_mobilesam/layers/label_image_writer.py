"""Write an instance label image (one plane or several) into a Labels layer as one undo step.

Automatic segmentation gives a label image with ids 1..N per run, not one mask per object, so
it is written as a whole: its ids move above the layer's largest id (``max + 1`` upwards, as
interactive commits number theirs), pixels that already hold a label are left alone when
``protect`` is on, and every write of every plane goes through ``Labels.data_setitem`` inside
one ``Labels.block_history()``, so one ``labels.undo()`` removes the whole result.

Everything is checked before the first pixel is written (layer type, dtype, shape, the id range
the dtype can hold): a result that cannot be written writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from napari.layers import Labels

from napari_mobilesam.layers.labels_writer import (
    LabelsError,
    Written,
    next_label_id,
    observed_write,
    writable_data,
)
from napari_mobilesam.layers.plane import PlaneRef


@dataclass
class LabelImageReport:
    """What writing one label image did.

    Attributes:
        ids: the new ids written, consecutive from the layer's old ``max + 1``.
        found: objects in the label image (ids in use before protection).
        written: pixels set.
        protected: pixels left alone because they held a label before.
        skipped: objects that wrote nothing because all their pixels were protected.
    """

    ids: list[int] = field(default_factory=list)
    found: int = 0
    written: int = 0
    protected: int = 0
    skipped: int = 0


def _check_plane(labels: Labels, plane: PlaneRef, label_image: np.ndarray) -> None:
    shape = labels.data.shape
    shown = tuple(axis for axis, index in enumerate(plane.slice_index) if index is None)
    fits = (
        len(plane.slice_index) == len(shape)
        and label_image.shape == tuple(plane.shape)
        and shown == tuple(sorted(plane.displayed))
        and tuple(shape[axis] for axis in plane.displayed) == tuple(plane.shape)
        and all(
            0 <= index < size
            for index, size in zip(plane.slice_index, shape, strict=True)
            if index is not None
        )
    )
    if not fits:
        raise LabelsError(
            f"A {label_image.shape} label image for the {tuple(plane.shape)} plane at slice "
            f"{plane.slice_index} does not fit Labels layer '{labels.name}' of shape {shape}; "
            "nothing was written."
        )
    if label_image.dtype.kind not in "iu":
        raise LabelsError(f"A label image needs an integer dtype, got {label_image.dtype}.")


def write_label_image(
    labels: Labels,
    planes: Mapping[PlaneRef, np.ndarray],
    protect: bool = True,
    *,
    mode: str | None = None,
) -> LabelImageReport:
    """Write label images into ``labels``: new ids above the layer's, one undo step.

    Args:
        labels: the target layer (check it against the image with
            :func:`~napari_mobilesam.layers.labels_writer.check_target` first).
        planes: per plane, its (H, W) integer label image in screen order, 0 = background.
            An id used on several planes is one object (a 3D object keeps one new id).
        protect: when true, only pixels that are 0 in the layer are written; an object whose
            pixels are all taken is skipped and gets no id.
        mode: the run's name for the layer's observers (default ``"everything"``; see
            :class:`~napari_mobilesam.layers.labels_writer.Written`).

    Returns:
        A :class:`LabelImageReport`; ``ids`` is empty when nothing was written.

    Raises:
        LabelsError: the layer cannot be written or cannot hold the new ids (its dtype is too
            small); nothing was written then.
    """
    data = writable_data(labels)
    report = LabelImageReport()
    writes: list[tuple[tuple[np.ndarray, ...], np.ndarray]] = []
    found: set[int] = set()
    kept: set[int] = set()
    for plane, label_image in planes.items():
        label_image = np.asarray(label_image)
        _check_plane(labels, plane, label_image)
        if label_image.size and label_image.min() < 0:
            raise LabelsError("A label image holds negative ids; ids must be >= 0.")
        inside = label_image > 0
        indices = plane.mask_indices(inside)
        # np.nonzero order, the same as mask_indices' rows and columns.
        ids = label_image[inside].astype(np.int64, copy=False)
        found.update(np.unique(ids).tolist())
        if protect:
            free = data[indices] == 0
            report.protected += int(np.count_nonzero(~free))
            indices = tuple(axis[free] for axis in indices)
            ids = ids[free]
        kept.update(np.unique(ids).tolist())
        writes.append((indices, ids))
    report.found = len(found)
    report.skipped = len(found - kept)
    if not kept:
        return report

    survivors = np.array(sorted(kept), dtype=np.int64)
    first = next_label_id(labels)
    last = first + len(survivors) - 1
    limit = int(np.iinfo(data.dtype).max)
    if last > limit:
        raise LabelsError(
            f"Labels layer '{labels.name}' has dtype {data.dtype}, which holds ids up to "
            f"{limit}; these {len(survivors)} object(s) need ids {first} to {last}. Nothing was "
            f"written; convert the layer (layer.data = layer.data.astype('uint32')) or choose "
            "'create new'."
        )
    # Old id -> new id, consecutive in the order of the old ids.
    mapping = np.zeros(int(survivors[-1]) + 1, dtype=np.int64)
    mapping[survivors] = np.arange(first, last + 1, dtype=np.int64)
    with observed_write(labels) as outcome:
        with labels.block_history():
            for indices, ids in writes:
                if ids.size:
                    labels.data_setitem(indices, mapping[ids].astype(data.dtype), refresh=False)
                    report.written += int(ids.size)
        labels.refresh()
        report.ids = list(range(first, last + 1))
        id_map = {int(old): int(mapping[old]) for old in survivors}
        outcome.append(Written("label_image", [planes], report.ids, protect, id_map, mode))
    return report
