"""Replay a project folder: decode every recorded prompt again, with these or other weights.

:func:`replay_project` reads the records of a project folder (see
:mod:`~napari_mobilesam.engine.project_store`) in step order and redoes each on a fresh label
volume (the project's initial labels):

- ``click`` / ``box`` objects: the plane is converted with the recorded contrast limits, encoded,
  and the recorded prompts decoded, through the recorded refinement chain (each earlier stage's
  chosen logits are the next one's ``mask_input``); the recorded candidate is kept;
- ``propagation`` objects: the seed is decoded the same way and followed with the recorded
  settings, axis and start plane;
- ``everything`` runs: the recorded planes are segmented again with the recorded settings and
  contrast limits, linked from plane to plane and written as the plugin writes a label image;
- each object is written with its recorded id, keeping existing labels when the step did;
- ``undo`` / ``redo`` revert or repeat the named step; napari ``edit`` steps (paint, fill) and
  other modes are listed as not replayed.

With the weights and runtime of the recording, the replayed volume equals the stored one. With
other weights, :class:`ReplayResult` says per object how far it moved: the IoU between the stored
and the replayed object, and the area change.

numpy + torch; no napari. The image is read through a ``read_plane`` callable, so any array,
file reader or lazy store can feed it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.engine.project_store import ProjectError, ProjectStore

PlaneReader = Callable[[tuple[int, ...]], np.ndarray]
"""Plane index on the leading axes -> that plane's pixels, (H, W) or (H, W, C) for RGB."""

REPLAYED_MODES = ("click", "box", "propagation")


@dataclasses.dataclass
class ObjectChange:
    """One object of the recording, stored against replayed.

    Attributes:
        id: its label id.
        step: the step that wrote it.
        mode: how it was made.
        stored_area: its pixels in the stored volume.
        replayed_area: its pixels in the replayed volume.
        iou: intersection over union of the two (1.0 when both are empty).
        note: why it was not replayed, or "".
    """

    id: int
    step: int
    mode: str
    stored_area: int
    replayed_area: int
    iou: float
    note: str = ""

    @property
    def area_change(self) -> float:
        """Relative change of the area, replayed against stored (0.0 = the same)."""
        if self.stored_area == 0:
            return 0.0 if self.replayed_area == 0 else float("inf")
        return self.replayed_area / self.stored_area - 1.0


@dataclasses.dataclass
class ReplayResult:
    """The replayed volume and how every object compares with the stored one.

    Attributes:
        labels: the replayed label volume.
        stored: the project's label volume.
        objects: per object, stored against replayed.
        skipped_steps: steps not replayed (napari edits) and what may make the replay differ.
    """

    labels: np.ndarray
    stored: np.ndarray
    objects: list[ObjectChange]
    skipped_steps: list[str]

    @property
    def identical(self) -> bool:
        """Whether the replayed volume equals the stored one, pixel for pixel."""
        return bool(np.array_equal(self.labels, self.stored))

    def table(self) -> str:
        """The per-object comparison as CSV text (id, step, mode, areas, IoU, area change)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["id", "step", "mode", "stored_area", "replayed_area", "iou",
                         "area_change", "note"])  # fmt: skip
        for o in self.objects:
            writer.writerow([o.id, o.step, o.mode, o.stored_area, o.replayed_area,
                             f"{o.iou:.4f}", f"{o.area_change:+.4f}", o.note])  # fmt: skip
        return out.getvalue()


class _Decoder:
    """Encodes planes (keeping the newest embeddings) and decodes recorded objects."""

    def __init__(self, predictor: Any, read_plane: PlaneReader, rgb: bool) -> None:
        self.predictor = predictor
        self.read_plane = read_plane
        self.rgb = rgb
        self._embeddings: dict[tuple, tuple[Any, tuple[int, int]]] = {}

    def set_plane(self, plane: dict[str, Any], limits: Sequence[float]) -> tuple[int, int]:
        """Make the predictor hold the embedding of ``plane`` (a record's ``plane``)."""
        from napari_mobilesam.engine.image_conversion import shrink_for_encoder, to_uint8_rgb

        slice_index = plane["slice_index"]
        displayed = plane["displayed"]
        shape = (int(plane["shape"][0]), int(plane["shape"][1]))
        leading = tuple(int(i) for i in slice_index[:-2])
        key = (leading, tuple(displayed), tuple(float(v) for v in limits))
        cached = self._embeddings.get(key)
        if cached is not None:
            self.predictor.set_image_embedding(*cached)
            return shape
        pixels = np.asarray(self.read_plane(leading))
        if displayed[0] > displayed[1]:
            pixels = np.swapaxes(pixels, 0, 1)
        image = to_uint8_rgb(
            shrink_for_encoder(pixels), contrast_limits=(float(limits[0]), float(limits[1])),
            rgb=self.rgb,
        )  # fmt: skip
        if image.shape[:2] == shape:
            self.predictor.set_image(image)
        else:
            self.predictor.set_image(image, original_size=shape)
        if len(self._embeddings) >= 4:
            self._embeddings.pop(next(iter(self._embeddings)))
        self._embeddings[key] = (self.predictor.get_image_embedding(), shape)
        return shape

    def decode(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(mask, low-res logits of the chosen candidate) of a click/box record."""
        plane = record["plane"]
        self.set_plane(plane, record["contrast_limits"])
        row, col = plane["displayed"]
        prompts = record["prompts"]
        points = np.asarray(prompts.get("points") or np.zeros((0, len(plane["slice_index"]))))
        coords = points[:, [col, row]].astype(np.float64) if len(points) else np.zeros((0, 2))
        labels = np.asarray(prompts.get("point_labels") or [], dtype=np.int64)
        box = None
        if prompts.get("box") is not None:
            corners = np.asarray(prompts["box"], dtype=np.float64)
            box = np.concatenate([corners[0, [col, row]], corners[1, [col, row]]])
        mask_input = None
        for stage in record.get("refined_from", []):
            n = int(stage["points"])
            _, _, low = self._predict(coords[:n], labels[:n], box, mask_input, stage["multimask"])
            mask_input = low[int(stage["candidate"])][None, :, :]
        masks, _, low = self._predict(coords, labels, box, mask_input, record["multimask"])
        chosen = int(record["candidate"])
        return np.asarray(masks[chosen], dtype=bool), np.asarray(low[chosen], np.float32)

    def _predict(self, coords, labels, box, mask_input, multimask):
        has_points = len(coords) > 0
        return self.predictor.predict(
            point_coords=coords if has_points else None,
            point_labels=labels if has_points else None,
            box=box,
            mask_input=mask_input,
            multimask_output=bool(multimask),
        )

    def propagate(self, record: dict[str, Any], n_planes: int) -> dict[tuple, np.ndarray]:
        """Masks by full slice index of a propagation record."""
        from napari_mobilesam.engine.propagation import PropagationSettings, Seed, propagate
        from napari_mobilesam.engine.steps import drive

        seed = record["seed"]
        axis, start = int(record["axis"]), int(record["start"])
        mask, low = self.decode(seed)
        values = dict(record["settings"])
        values["stop_planes"] = frozenset(values.get("stop_planes", ()))
        if values.get("plane_range") is not None:
            values["plane_range"] = tuple(values["plane_range"])
        settings = PropagationSettings(**values)
        plane = seed["plane"]

        def moved(index: int) -> dict[str, Any]:
            slice_index = list(plane["slice_index"])
            slice_index[axis] = int(index)
            return {**plane, "slice_index": slice_index}

        def embed(index: int) -> tuple[Any, tuple[int, int]]:
            shape = self.set_plane(moved(index), seed["contrast_limits"])
            return self.predictor.get_image_embedding(), shape

        embed(start)
        (result,) = drive(propagate(self.predictor, embed, n_planes, start, [Seed(mask, low)],
                                    settings))  # fmt: skip
        return {tuple(moved(z)["slice_index"]): m for z, m in result.masks.items()}


def _tile_shape(tile_size: int | None, plane_shape: Sequence[int]) -> int | None:
    """Segment everything's tile rule (0: tiles of 1024 only for larger planes; None: never)."""
    if tile_size is None:
        return None
    if int(tile_size) == 0:
        return 1024 if max(plane_shape) > 1024 else None
    return int(tile_size)


def _everything_labels(decoder: _Decoder, record: dict[str, Any]) -> list[tuple[tuple, Any]]:
    """Segment everything again on the recorded planes: (slice index, labels) in run order,
    ids 1..N over the run, objects linked from plane to plane as the plugin links them."""
    from napari_mobilesam.engine.automatic_mask_generator import SamAutomaticMaskGenerator
    from napari_mobilesam.engine.everything import link_to_previous, segment_everything_steps
    from napari_mobilesam.engine.image_conversion import shrink_for_encoder, to_uint8_rgb
    from napari_mobilesam.engine.steps import drive

    settings = record["settings"]
    limits = tuple(float(v) for v in record["contrast_limits"])
    generator = SamAutomaticMaskGenerator(
        decoder.predictor, points_per_side=settings["points_per_side"],
        pred_iou_thresh=settings["pred_iou_thresh"],
        stability_score_thresh=settings["stability_score_thresh"],
        decoder_precision=settings.get("decoder_precision", "fp32"),
    )  # fmt: skip
    planes = [tuple(p) for p in record["run_planes"]]
    displayed = record["run_displayed"][0]
    varying = [a for a in range(len(planes[0])) if len({p[a] for p in planes}) > 1]
    axis = varying[0] if varying else None
    out = []
    previous: tuple[int, np.ndarray] | None = None
    next_id = 1
    for slice_index in planes:
        pixels = np.asarray(decoder.read_plane(tuple(int(i) for i in slice_index[:-2])))
        if displayed[0] > displayed[1]:
            pixels = np.swapaxes(pixels, 0, 1)
        image = to_uint8_rgb(shrink_for_encoder(pixels), contrast_limits=limits, rgb=decoder.rgb)
        if image.min() == image.max():
            labels = np.zeros(pixels.shape[:2], dtype=np.int32)
        else:
            labels = drive(segment_everything_steps(
                pixels, generator, tile_shape=_tile_shape(settings["tile_size"], pixels.shape[:2]),
                min_size=settings["min_size"], rgb=decoder.rgb, contrast_limits=limits,
            ))  # fmt: skip
        index = None if axis is None else slice_index[axis]
        if index is not None and previous is not None and previous[0] == index - 1:
            labels, next_id = link_to_previous(previous[1], labels, next_id)
        else:
            count = int(labels.max(initial=0))
            labels = np.where(labels > 0, labels + (next_id - 1), 0).astype(np.int32)
            next_id += count
        out.append((slice_index, labels))
        if index is not None:
            previous = (index, labels)
    return out


def _plane_indices(slice_index: Sequence[int | None], displayed: Sequence[int], mask: np.ndarray):
    """Data indices of a plane mask's true pixels (mask in screen order)."""
    rows, cols = np.nonzero(mask)
    indices = []
    for axis, index in enumerate(slice_index):
        if axis == displayed[0]:
            indices.append(rows)
        elif axis == displayed[1]:
            indices.append(cols)
        else:
            indices.append(np.full(rows.shape, int(index), dtype=np.intp))
    return tuple(indices)


def _everything_replayable(record: dict[str, Any]) -> bool:
    """Whether a step is a segment-everything run recorded with what it needs to run again."""
    return record.get("mode") == "everything" and all(
        record.get(key) is not None for key in ("settings", "run_planes", "contrast_limits")
    )


def _replayable(record: dict[str, Any], ndim: int) -> str:
    """ "" when the object can be decoded again, else why not."""
    mode = record.get("mode")
    if mode not in REPLAYED_MODES:
        return f"mode {mode!r} is not replayed"
    source = record.get("seed") if mode == "propagation" else record
    if source is None or source.get("prompts") is None:
        return "its prompts were not recorded"
    if mode == "propagation" and record.get("settings") is None:
        return "its propagation settings were not recorded"
    if sorted(source["plane"]["displayed"]) != [ndim - 2, ndim - 1]:
        return "it was drawn on a plane across the stack (not the last two axes)"
    if source.get("contrast_limits") is None:
        return "its contrast limits were not recorded"
    return ""


def replay_project(
    folder: str | os.PathLike[str],
    read_plane: PlaneReader,
    *,
    predictor: Any = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    rgb: bool | None = None,
    workers: int = 1,
    out: str | os.PathLike[str] | None = None,
) -> ReplayResult:
    """Re-run every recorded prompt of a project folder.

    Args:
        folder: the project folder.
        read_plane: the image's pixels by plane (see :data:`PlaneReader`).
        predictor: a ``SamPredictor`` (for one worker); else one is built from ``weights``.
        weights: the weights file to replay with (default: the recorded one, if it exists).
        device: torch device for a predictor built here.
        rgb: whether planes have a colour axis (default: the manifest's image entry).
        workers: threads decoding objects side by side (each with its own predictor on one
            shared model); the volume is still written in step order.
        out: a folder for the replayed project (labels, records with the replay's weights) and
            ``replay.csv``; None writes nothing.

    Raises:
        ProjectError: not a project, another format version, a record naming a missing plane.
        ValueError: no weights to replay with.
    """
    with ProjectStore.open(folder, writable=False) as store:
        records = store.records
        stored = store.read_labels()
        volume = store.read_initial()
        manifest = store.manifest
    image_info = manifest.get("image") or {}
    rgb = bool(image_info.get("rgb", False)) if rgb is None else rgb
    ndim = volume.ndim
    weights = _weights(records, predictor, weights)
    predictors = [predictor] if predictor is not None else _predictors(weights, device, workers)
    masks, notes = _decode_all(records, predictors, read_plane, rgb, volume.shape, ndim)

    writes: dict[int, list[tuple[tuple, np.ndarray, np.ndarray]]] = {}
    first_step: dict[int, tuple[int, str]] = {}
    skipped: list[str] = []
    target = _ReplayTarget(out, manifest, volume, _model_record(weights, predictors[0], device))
    for record in records:
        step, kind = int(record["step"]), record.get("kind")
        if kind in ("undo", "redo"):
            other = int(record.get("undoes") or record.get("redoes"))
            changes = writes.get(other, [])
            if kind == "undo":  # newest write first, so overlapping writes unwind in order
                for indices, old, _ in reversed(changes):
                    volume[indices] = old
            else:
                for indices, _, new in changes:
                    volume[indices] = new
            target.save(volume, changes, record)
            continue
        if kind != "write":
            skipped.append(f"step {step}: {kind} (napari edit) not replayed")
            continue
        changes = []
        for obj in record.get("objects", []):
            first_step.setdefault(int(obj["id"]), (step, obj.get("mode", "?")))
        if (step, -1) in masks:
            changes = _write_label_planes(
                volume, masks[(step, -1)], record, record["run_displayed"][0]
            )
            writes[step] = changes
            target.save(volume, changes, record)
            continue
        for number, obj in enumerate(record.get("objects", [])):
            label_id = int(obj["id"])
            first_step.setdefault(label_id, (step, obj.get("mode", "?")))
            for slice_index, mask in masks.get((step, number), []):
                indices = _plane_indices(slice_index, _displayed(obj), mask)
                if record.get("protect", True):
                    free = volume[indices] == 0
                    indices = tuple(axis[free] for axis in indices)
                old = volume[indices].copy()
                volume[indices] = label_id
                changes.append((indices, old, np.full(old.shape, label_id, volume.dtype)))
        writes[step] = changes
        target.save(volume, changes, record)
    runtimes = {o.get("runtime") for r in records for o in r.get("objects", [])} - {None, "torch"}
    if runtimes:
        skipped.append(
            f"recorded with the {', '.join(sorted(runtimes))} encoder runtime; the replay ran "
            "torch, so masks may differ by a few pixels"
        )
    result = _compare(stored, volume, first_step, notes, skipped)
    target.finish(result)
    return result


def _write_label_planes(volume: np.ndarray, planes: list, record: dict[str, Any], displayed):
    """Write a label image run as the plugin does: ids moved above the volume's largest,
    consecutive in increasing order of the run's ids; taken pixels kept when protecting."""
    writes = []
    kept: set[int] = set()
    for slice_index, labels in planes:
        inside = labels > 0
        indices = _plane_indices(slice_index, displayed, inside)
        ids = labels[inside].astype(np.int64)
        if record.get("protect", True):
            free = volume[indices] == 0
            indices, ids = tuple(axis[free] for axis in indices), ids[free]
        kept.update(np.unique(ids).tolist())
        writes.append((indices, ids))
    if not kept:
        return []
    survivors = np.array(sorted(kept), dtype=np.int64)
    first = max(int(volume.max()) + 1, 1)
    mapping = np.zeros(int(survivors[-1]) + 1, dtype=np.int64)
    mapping[survivors] = np.arange(first, first + len(survivors))
    changes = []
    for indices, ids in writes:
        old = volume[indices].copy()
        new = mapping[ids].astype(volume.dtype)
        volume[indices] = new
        changes.append((indices, old, new))
    return changes


def _displayed(obj: dict[str, Any]) -> list[int]:
    source = obj.get("seed") if obj.get("mode") == "propagation" else obj
    return list(source["plane"]["displayed"])


def _model_record(weights: Any, predictor: Any, device: str) -> dict[str, Any]:
    """What the replay ran with, for the records of the ``out`` project."""
    from napari_mobilesam.engine.weights import file_sha256

    sha = file_sha256(weights) if weights is not None and Path(weights).is_file() else None
    return {"weights": None if weights is None else str(weights), "weights_sha256": sha,
            "runtime": "torch", "device": device}  # fmt: skip


def _weights(records: list[dict[str, Any]], predictor: Any, weights: Any) -> Any:
    """The weights to replay with: given, else the recorded file where it still exists."""
    if weights is not None or predictor is not None:
        return weights
    recorded = [o.get("weights") for r in records for o in r.get("objects", [])]
    found = next((w for w in recorded if w and Path(w).is_file()), None)
    if found is None:
        raise ValueError(
            "weights: none given and the recorded weights file is not here; pass the weights "
            "file to replay with."
        )
    return found


def _predictors(weights: Any, device: str, workers: int) -> list[Any]:
    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.model.build import build_mobile_sam

    model = build_mobile_sam(str(weights), device=device)
    return [SamPredictor(model) for _ in range(max(1, int(workers)))]


def _decode_all(records, predictors, read_plane, rgb, shape, ndim):
    """Every replayable object's masks: {(step, object number): [(slice index, mask)]}."""
    jobs = []
    notes: dict[tuple[int, int], str] = {}
    for record in records:
        if record.get("kind") != "write":
            continue
        if _everything_replayable(record):
            jobs.append((int(record["step"]), -1, record))
            continue
        for number, obj in enumerate(record.get("objects", [])):
            reason = _replayable(obj, ndim)
            if reason:
                notes[(int(record["step"]), number)] = reason
            else:
                jobs.append((int(record["step"]), number, obj))
    free = list(range(len(predictors)))
    lock = threading.Lock()

    def run(job):
        step, number, obj = job
        with lock:
            slot = free.pop()
        try:
            decoder = _Decoder(predictors[slot], read_plane, rgb)
            if number == -1:
                return (step, number), _everything_labels(decoder, obj)
            if obj["mode"] == "propagation":
                n_planes = int(shape[int(obj["axis"])])
                found = decoder.propagate(obj, n_planes)
                return (step, number), sorted(found.items())
            mask, _ = decoder.decode(obj)
            return (step, number), [(tuple(obj["plane"]["slice_index"]), mask)]
        finally:
            with lock:
                free.append(slot)

    with ThreadPoolExecutor(max_workers=len(predictors)) as pool:
        results = dict(pool.map(run, jobs))
    return results, notes


def _compare(stored, volume, first_step, notes, skipped) -> ReplayResult:
    objects = []
    ids = sorted(set(np.unique(stored).tolist()) | set(np.unique(volume).tolist()) - {0})
    by_step_note = {step: note for (step, _), note in notes.items()}
    for label_id in ids:
        if label_id == 0:
            continue
        a, b = stored == label_id, volume == label_id
        union = int(np.count_nonzero(a | b))
        iou = 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union
        step, mode = first_step.get(label_id, (0, "initial"))
        objects.append(ObjectChange(int(label_id), step, mode, int(a.sum()), int(b.sum()),
                                    iou, by_step_note.get(step, "")))  # fmt: skip
    return ReplayResult(volume, stored, objects, skipped)


class _ReplayTarget:
    """The ``out`` folder: a project holding the replayed steps, and ``replay.csv``."""

    def __init__(
        self, out: Any, manifest: dict[str, Any], initial: np.ndarray, model: dict[str, Any]
    ) -> None:
        self.store = None
        self.model = model
        if out is None:
            return
        out = Path(out)
        self.out = out
        self.store = ProjectStore.create(
            out / "project", initial.shape, initial.dtype, image=manifest.get("image"),
            placement=manifest.get("placement"), initial=initial,
        )  # fmt: skip

    def save(self, volume: np.ndarray, changes: list, record: dict[str, Any]) -> None:
        if self.store is None:
            return
        chunks = set()
        for indices, _, _ in changes:
            if len(indices[0]):
                leading = np.stack(indices[:-2], axis=1) if volume.ndim > 2 else None
                chunks |= (
                    {()} if leading is None else {tuple(r) for r in np.unique(leading, axis=0)}
                )
        planes = {tuple(int(i) for i in c): volume[c] for c in chunks}
        copy = {k: v for k, v in record.items() if k not in ("step", "planes", "time")}
        copy["replay_of"] = int(record["step"])
        copy["replayed_with"] = self.model
        self.store.write_step(planes, copy)

    def finish(self, result: ReplayResult) -> None:
        if self.store is None:
            return
        self.store.close()
        from napari_mobilesam.engine.atomic_files import write_text_atomically

        write_text_atomically(self.out / "replay.csv", result.table())


__all__ = ["ObjectChange", "ProjectError", "ReplayResult", "replay_project"]
