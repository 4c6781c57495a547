"""Save every change of a Labels layer into a project folder, with what made it.

A :class:`ProjectRecorder` ties one Labels layer to one
:class:`~napari_mobilesam.engine.project_store.ProjectStore`:

- every write of this package's writers (commit, propagation, segment everything, refine...)
  is saved before the writer returns: the planes it changed and one record per object (id,
  planes, mode, prompts in the image's data coordinates, chosen candidate, contrast limits,
  weights sha256, runtime, package version, time);
- napari's own edits (paint, fill, erase) are saved as ``edit`` steps;
- ``labels.undo()`` / ``labels.redo()`` are saved as ``undo`` / ``redo`` steps naming the step
  they revert or repeat, so the folder matches what the layer shows after every step.

napari emits ``paint`` with each new history item and only ``set_data`` on undo and redo. The
recorder keeps the history items it saw (napari keeps the same objects) and, on ``set_data``,
checks the pixels of the newest one: back to their old values means an undo, to their new
values again (for the newest undone one) a redo.

A write that fails (read-only folder, full disk) is reported once through ``notify``; saving
stops there and the layer keeps everything, so no work leaves napari.

Headless use::

    recorder = ProjectRecorder.start(labels, "cells.mobilesam", image=image)
    commit_objects(labels, objects)          # saved before it returns
    recorder.close()
    labels, recorder = open_project("cells.mobilesam")   # resume: further commits append
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from napari_mobilesam.engine.project_store import (
    Chunk,
    ProjectError,
    ProjectStore,
    ProjectWriteError,
    now_iso,
    package_version,
)
from napari_mobilesam.layers.labels_writer import (
    Written,
    add_write_observer,
    placement_kwargs,
    remove_write_observer,
)
from napari_mobilesam.layers.plane import PlaneRef

PROJECT_METADATA_KEY = "napari-mobilesam project"
# Undo steps the recorder can tell apart (napari's own history is about as long by default).
HISTORY_DEPTH = 256


@dataclasses.dataclass
class ModelInfo:
    """The model behind the next writes: recorded with every object.

    Attributes:
        weights: the weights file (its sha256 is computed once, on the first record).
        runtime: what ran the image encoder ("torch", "onnxruntime", "openvino").
        device: the torch device.
    """

    weights: str | Path | None = None
    runtime: str | None = "torch"
    device: str | None = None
    _sha256: str | None = dataclasses.field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        if self._sha256 is None and self.weights is not None and Path(self.weights).is_file():
            from napari_mobilesam.engine.weights import file_sha256

            self._sha256 = file_sha256(self.weights)
        return {
            "weights": None if self.weights is None else str(self.weights),
            "weights_sha256": self._sha256,
            "runtime": self.runtime,
            "device": self.device,
        }


@dataclasses.dataclass
class _Entry:
    step: int
    atoms: list[Any]


def _atom_chunks(atom: Any, ndim: int) -> set[Chunk]:
    """Planes (leading indices) a napari history atom touches."""
    if ndim == 2:
        return {()}
    slice_key = getattr(atom, "slice_key", None)
    if slice_key is not None:
        ranges = []
        for axis in range(ndim - 2):
            key = slice_key[axis]
            ranges.append(range(key.start, key.stop) if isinstance(key, slice) else [int(key)])
        return {tuple(int(i) for i in c) for c in np.array(np.meshgrid(*ranges)).reshape(
            ndim - 2, -1).T}  # fmt: skip
    indices = atom[0]
    leading = np.stack([np.asarray(i).ravel() for i in indices[:-2]], axis=1)
    return {tuple(int(i) for i in row) for row in np.unique(leading, axis=0)}


def _atom_is(atom: Any, data: np.ndarray, undone: bool) -> bool:
    """Whether the atom's pixels hold its old values (``undone``) or its new ones."""
    slice_key = getattr(atom, "slice_key", None)
    if slice_key is not None:
        region = np.asarray(data[slice_key])
        current = region if atom.mask is None else region[atom.mask]
        wanted = atom.old_values if undone else atom.new_value
        return bool(np.array_equal(current, np.broadcast_to(wanted, current.shape)))
    indices, old, new = atom
    current = np.asarray(data[indices])
    wanted = old if undone else new
    return bool(np.array_equal(current, np.broadcast_to(wanted, current.shape)))


def plane_to_data(plane: PlaneRef, xy: np.ndarray) -> list[list[float]]:
    """(N, 2) SAM (x, y) positions on ``plane`` -> (N, ndim) positions in data coordinates."""
    out = []
    for x, y in np.asarray(xy, dtype=np.float64).reshape(-1, 2):
        position = [float(i) if i is not None else 0.0 for i in plane.slice_index]
        position[plane.displayed[0]] = float(y)
        position[plane.displayed[1]] = float(x)
        out.append(position)
    return out


def plane_record(plane: PlaneRef) -> dict[str, Any]:
    return {
        "slice_index": list(plane.slice_index),
        "displayed": list(plane.displayed),
        "shape": list(plane.shape),
    }


def _contrast_limits(obj: Any) -> list[float] | None:
    key = getattr(obj, "embedding_key", None)
    try:
        normalisation = key[2]
        if normalisation[0] == "contrast":
            return [float(normalisation[1]), float(normalisation[2])]
    except (TypeError, IndexError, KeyError):
        pass
    return None


def _segmented_record(obj: Any) -> dict[str, Any]:
    """The record of a ``SegmentedObject``: its prompts, candidate, normalisation."""
    prompt = obj.prompt
    box = None if prompt.box is None else plane_to_data(obj.plane, np.reshape(prompt.box, (2, 2)))
    chain = []
    earlier = getattr(obj, "refined_from", None)
    while earlier is not None:  # oldest last: SAM refined each from the one before
        chain.append({"points": len(earlier.prompt.point_coords), "candidate": earlier.chosen,
                      "multimask": bool(earlier.multimask_output)})  # fmt: skip
        earlier = getattr(earlier, "refined_from", None)
    return {
        "mode": "box" if prompt.box is not None else "click",
        "plane": plane_record(obj.plane),
        "prompts": {
            "points": plane_to_data(obj.plane, prompt.point_coords),
            "point_labels": [int(v) for v in np.asarray(prompt.point_labels).ravel()],
            "box": box,
        },
        "refined_from": chain[::-1],
        "candidate": int(obj.chosen),
        "multimask": bool(obj.multimask_output),
        "scores": [round(float(s), 6) for s in np.asarray(obj.scores).ravel()],
        "contrast_limits": _contrast_limits(obj),
    }


def _planes_of(mapping: Mapping[Any, Any]) -> list[list[int | None]]:
    return [list(p.slice_index) for p in mapping if isinstance(p, PlaneRef)]


def describe_source(source: Any) -> dict[str, Any]:
    """One object's record fields, from what the writer was given."""
    if hasattr(source, "prompt") and hasattr(source, "chosen"):
        record = _segmented_record(source)
        record["planes"] = [record["plane"]["slice_index"]]
        return record
    if isinstance(source, Mapping) and hasattr(source, "axis") and hasattr(source, "start"):
        record: dict[str, Any] = {
            "mode": "propagation",
            "planes": _planes_of(source),
            "axis": int(source.axis),
            "start": int(source.start),
            "stop_reasons": dict(getattr(source, "stop_reasons", {})),
        }
        seed = getattr(source, "seed", None)
        if seed is not None:
            record["seed"] = _segmented_record(seed)
            record["contrast_limits"] = record["seed"]["contrast_limits"]
        settings = getattr(source, "settings", None)
        if settings is not None:
            values = dataclasses.asdict(settings)
            values["stop_planes"] = sorted(values.get("stop_planes", ()))
            record["settings"] = values
        return record
    if isinstance(source, Mapping):
        return {"mode": "objects", "planes": _planes_of(source)}
    return {"mode": "objects", "planes": []}


class ProjectRecorder:
    """Saves a Labels layer's changes into a project folder (see the module docstring).

    Args:
        labels: the layer; its data must be an in-memory numpy array of the store's shape.
        store: an open, writable store.
        model: the model behind the writes (set :attr:`model` again when it changes).
        notify: called once with the message of the first failed save (napari: a warning).
    """

    def __init__(
        self,
        labels: Labels,
        store: ProjectStore,
        model: ModelInfo | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        if tuple(np.shape(labels.data)) != store.shape:
            raise ProjectError(
                f"Labels layer '{labels.name}' has shape {tuple(np.shape(labels.data))}, the "
                f"project in {store.folder} has {store.shape}."
            )
        self.labels = labels
        self.store = store
        self.model = model or ModelInfo()
        self.notify = notify or _napari_warning
        self.error: str | None = None
        self.last_step: dict[str, Any] | None = None
        self._writing = False
        self._pending: list[Any] = []
        self._edits: list[list[Any]] = []  # napari edits announced, not applied yet
        self._context: dict[str, Any] = {}
        self._undo: deque[_Entry] = deque(maxlen=HISTORY_DEPTH)
        self._redo: deque[_Entry] = deque(maxlen=HISTORY_DEPTH)
        labels.events.paint.connect(self._on_paint)
        labels.events.set_data.connect(self._on_set_data)
        labels.events.labels_update.connect(self._save_edits)
        add_write_observer(labels, self)
        labels.metadata[PROJECT_METADATA_KEY] = str(store.folder)

    # ------------------------------------------------------------------ starting
    @classmethod
    def start(
        cls,
        labels: Labels,
        folder: str | Path,
        image: Image | None = None,
        model: ModelInfo | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> ProjectRecorder:
        """Start a new project in ``folder`` from the layer's current labels.

        Raises:
            ProjectError: the folder holds a project already (open it instead) or is locked.
            ProjectWriteError: the folder cannot be written (read-only, full).
        """
        data = np.asarray(labels.data)
        store = ProjectStore.create(
            folder,
            data.shape,
            data.dtype,
            image=image_record(image) if image is not None else {},
            placement={k: np.asarray(v).tolist() for k, v in placement_kwargs(labels).items()},
            initial=data,
        )
        try:
            return cls(labels, store, model, notify)
        except BaseException:
            store.close()
            raise

    # ------------------------------------------------------------------ control
    @property
    def saving(self) -> bool:
        """Whether changes are still being saved (False after a failed write or close)."""
        return self.error is None and self.store is not None

    @contextlib.contextmanager
    def describe(self, **fields: Any) -> Iterator[None]:
        """Add ``fields`` to the records of the writes made inside the block (for example the
        settings of a segment-everything run: ``mode="everything", settings={...}``)."""
        self._context = dict(fields)
        try:
            yield
        finally:
            self._context = {}

    def close(self) -> None:
        """Stop saving and release the folder's lock."""
        with contextlib.suppress(Exception):
            self.labels.events.paint.disconnect(self._on_paint)
            self.labels.events.set_data.disconnect(self._on_set_data)
            self.labels.events.labels_update.disconnect(self._save_edits)
        remove_write_observer(self.labels, self)
        if self.store is not None:
            self.store.close()
        self.store = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ observers
    def write_started(self, labels: Labels) -> None:
        self._writing = True
        self._pending = []

    def write_finished(self, labels: Labels, written: Written | None) -> None:
        self._writing = False
        atoms = [atom for item in self._pending for atom in item]
        self._pending = []
        if written is None or not atoms:
            return
        objects = self._object_records(written)
        mode = written.mode or self._context.get("mode")
        if mode is None:
            modes = {o["mode"] for o in objects}
            mode = modes.pop() if len(modes) == 1 else "objects"
        step = {"kind": "write", "mode": mode, "protect": bool(written.protect)}
        settings = getattr(written.sources[0], "settings", None) if written.sources else None
        if written.kind == "label_image" and dataclasses.is_dataclass(settings):
            # Segment everything: what a replay needs to run it again (settings, the planes it
            # covered in order, the contrast limits).
            step["settings"] = dataclasses.asdict(settings)
            step["run_planes"] = [list(p.slice_index) for p in written.sources[0]]
            step["run_displayed"] = [list(p.displayed) for p in written.sources[0]][:1]
            step["contrast_limits"] = getattr(written.sources[0], "contrast_limits", None)
        step.update({k: v for k, v in self._context.items() if k != "mode"})
        step["objects"] = objects
        self._save(atoms, step)

    def _on_paint(self, event: Any) -> None:
        item = list(event.value)
        if self._writing:
            self._pending.append(item)
            return
        # napari announces a single paint or fill before it changes the data (a brush stroke
        # after): the edit is saved once its pixels hold the new values.
        self._edits.append(item)
        self._save_edits()

    def _save_edits(self, event: Any = None) -> None:
        data = self.labels.data
        while self._edits and all(_atom_is(a, data, undone=False) for a in self._edits[0]):
            self._save(self._edits.pop(0), {"kind": "edit", "mode": "edit", "objects": []})

    def _on_set_data(self, event: Any = None) -> None:
        if self._writing or not self.saving:
            return
        self._save_edits()
        data = self.labels.data
        if self._undo and all(_atom_is(a, data, undone=True) for a in self._undo[-1].atoms):
            entry = self._undo.pop()
            self._save(entry.atoms, {"kind": "undo", "undoes": entry.step, "objects": []},
                       history=False)  # fmt: skip
            self._redo.append(entry)
        elif self._redo and all(_atom_is(a, data, undone=False) for a in self._redo[-1].atoms):
            entry = self._redo.pop()
            self._save(entry.atoms, {"kind": "redo", "redoes": entry.step, "objects": []},
                       history=False)  # fmt: skip
            self._undo.append(entry)

    # ------------------------------------------------------------------ saving
    def _object_records(self, written: Written) -> list[dict[str, Any]]:
        common = {
            **self.model.record(),
            "package_version": package_version(),
            "time": now_iso(),
        }
        if written.kind == "label_image":
            return self._label_image_records(written, common)
        records = []
        for source, label_id in zip(written.sources, written.ids, strict=False):
            if label_id is None:
                continue
            record = {"id": int(label_id), **describe_source(source)}
            if written.mode is not None:
                record["mode"] = written.mode
            if "contrast_limits" not in record and "contrast_limits" in self._context:
                record["contrast_limits"] = self._context["contrast_limits"]
            records.append({**record, **common})
        return records

    def _label_image_records(
        self, written: Written, common: dict[str, Any]
    ) -> list[dict[str, Any]]:
        planes_of: dict[int, list[list[int | None]]] = {}
        for plane, image in written.sources[0].items():
            for old in np.unique(np.asarray(image)):
                new = written.id_map.get(int(old))
                if new is not None:
                    planes_of.setdefault(new, []).append(list(plane.slice_index))
        mode = written.mode or self._context.get("mode") or "everything"
        source = written.sources[0]
        limits = getattr(source, "contrast_limits", None) or self._context.get("contrast_limits")
        return [
            {
                "id": int(i),
                "mode": mode,
                "planes": planes_of.get(int(i), []),
                "contrast_limits": limits,
                **common,
            }  # fmt: skip
            for i in written.ids
        ]

    def _save(self, atoms: Sequence[Any], step: dict[str, Any], history: bool = True) -> None:
        if not self.saving:
            return
        ndim = len(self.store.shape)
        chunks: set[Chunk] = set()
        for atom in atoms:
            chunks |= _atom_chunks(atom, ndim)
        data = self.labels.data
        planes = {chunk: np.asarray(data[chunk]) for chunk in sorted(chunks)}
        start = time.perf_counter()
        try:
            self.last_step = self.store.write_step(planes, step)
        except (ProjectWriteError, ProjectError) as exc:
            self.error = str(exc)
            self.notify(f"MobileSAM: saving stopped. {exc}")
            return
        self.last_step["save_seconds"] = time.perf_counter() - start
        if history:
            self._undo.append(_Entry(self.last_step["step"], list(atoms)))
            self._redo.clear()


def _napari_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)


def image_record(image: Image) -> dict[str, Any]:
    """What the manifest keeps of the image: its file (if it came from one), name, rgb."""
    source = getattr(image, "source", None)
    path = getattr(source, "path", None)
    return {
        "path": None if path is None else str(Path(path).resolve()),
        "name": image.name,
        "rgb": bool(image.rgb),
        "contrast_limits": [float(v) for v in image.contrast_limits],
    }


def suggested_folder(image: Image | None) -> Path | None:
    """A project folder beside the image's file (``cells.tif`` -> ``cells.mobilesam``), or
    None when the image did not come from a file."""
    path = getattr(getattr(image, "source", None), "path", None) if image is not None else None
    if not path:
        return None
    path = Path(path)
    stem = path.name.split(".")[0] if path.is_file() else path.name.rstrip("/").split(".")[0]
    return path.parent / f"{stem}.mobilesam"


def layer_kwargs(manifest: Mapping[str, Any], folder: str | Path) -> dict[str, Any]:
    """The Labels layer's keyword arguments for a project: name, placement, and the folder in
    ``metadata`` (so a widget knows where the layer is saved)."""
    name = (manifest.get("image") or {}).get("name")
    kwargs: dict[str, Any] = {
        "name": f"{name} labels" if name else Path(folder).name,
        "metadata": {PROJECT_METADATA_KEY: str(Path(folder))},
    }
    for key, value in (manifest.get("placement") or {}).items():
        if key in ("scale", "translate", "rotate", "shear", "affine"):
            kwargs[key] = np.asarray(value, dtype=float)
    return kwargs


def open_project(
    folder: str | Path,
    model: ModelInfo | None = None,
    notify: Callable[[str], None] | None = None,
    labels: Labels | None = None,
) -> tuple[Labels, ProjectRecorder]:
    """Resume a project: its Labels layer (or ``labels``, filled from it) and a recorder
    that appends further steps.

    Raises:
        ProjectError: not a project, another format version, a broken record, or locked.
    """
    store = ProjectStore.open(folder)  # locks, and undoes a step a killed writer left
    try:
        data = store.read_labels()
        if labels is None:
            labels = Labels(data, **layer_kwargs(store.manifest, store.folder))
        else:
            if tuple(np.shape(labels.data)) != store.shape:
                raise ProjectError(
                    f"Labels layer '{labels.name}' has shape {tuple(np.shape(labels.data))}; "
                    f"the project in {store.folder} has {store.shape}."
                )
            labels.data = data
        return labels, ProjectRecorder(labels, store, model, notify)
    except BaseException:
        store.close()
        raise
