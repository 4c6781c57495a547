"""A project folder: the label volume and one JSON record per step, saved as work goes on.

Layout (readable with zarr and json alone; ``docs/projects.md`` describes every field)::

    project/
      project.json        manifest: format name and version, shape, dtype, image, placement
      labels.zarr/        zarr (format 2) label array, one chunk per plane (leading axes 1)
      records/000001.json one record per step (commit, propagation, everything, edit, undo,
                          redo), with one entry per object written
      journal/            the planes a step is about to overwrite, until its record is written
      lock                pid, host and token of the process writing the folder

Writing a step (:meth:`ProjectStore.write_step`): (1) the old content of the planes the step
changes goes to ``journal/<step>.npz`` (atomically); (2) each changed plane is written as one
chunk (zarr's local store writes a chunk to a temporary file and renames it); (3) the record is
written atomically; (4) the journal file is removed. The record is the commit point: a process
killed before it leaves a journal, and the next :meth:`ProjectStore.open` puts the journalled
planes back, so a step is in the folder whole or not at all.

Only one process (and one store per process) writes a folder at a time: :meth:`open` and
:meth:`create` take ``lock`` (created exclusively; a lock left by a dead process on this host is
taken over) and refuse otherwise.

numpy, zarr and json only: no napari, no torch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.engine.atomic_files import sweep_temporaries, write_bytes_atomically

FORMAT_NAME = "napari-mobilesam project"
FORMAT_VERSION = 1
MANIFEST_NAME = "project.json"
LABELS_NAME = "labels.zarr"
INITIAL_NAME = "initial.zarr"
RECORDS_NAME = "records"
JOURNAL_NAME = "journal"
LOCK_NAME = "lock"
# Test hook: "STEP" makes write_step block after the first chunk of that step (see
# tests/engine/test_project_crash.py), so a test can kill the process inside a write without
# guessing a moment. Unset in normal use.
TEST_GATE_ENV = "NAPARI_MOBILESAM_PROJECT_TEST_GATE"

Chunk = tuple[int, ...]
"""Index of one plane of the volume: its position on the leading axes (``()`` for 2D)."""

_OPEN_HERE: set[str] = set()  # folders this process holds, so a second store is refused too
_OPEN_LOCK = threading.Lock()


class ProjectError(ValueError):
    """The folder is not a project this version can use; the message says why and what to do."""


class ProjectLockedError(ProjectError):
    """Another writer holds the folder."""


class ProjectWriteError(RuntimeError):
    """Saving into the folder failed (read-only, disk full, removed); nothing of the step was
    recorded. The message names the folder and the reason."""


def package_version() -> str:
    """This package's version, without importing the package's public ``__init__``."""
    try:
        from importlib.metadata import version

        return version("napari-mobilesam")
    except Exception:  # running from a source tree that is not installed
        return "unknown"


def now_iso() -> str:
    """The current time, UTC, ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=False) + "\n").encode("utf-8")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _write_failure(folder: Path, exc: OSError) -> ProjectWriteError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "the disk is full"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = f"the folder is not writable ({exc.strerror or exc})"
    return ProjectWriteError(
        f"cannot save to the project folder {folder}: {reason}. The labels are still in "
        "napari; choose another folder to save them."
    )


class ProjectStore:
    """One project folder, opened for writing (it holds the folder's lock) or for reading.

    Create one with :meth:`create` (a new folder) or :meth:`open` (an existing one); use it as
    a context manager, or call :meth:`close`, to release the lock.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], writable: bool) -> None:
        self.folder = folder
        self.manifest = manifest
        self.writable = writable
        self.shape: tuple[int, ...] = tuple(int(s) for s in manifest["shape"])
        self.dtype = np.dtype(manifest["dtype"])
        self._array: Any = None
        self._token: str | None = None
        self._records: list[dict[str, Any]] = []
        # Read-only: planes of a step a killed writer left unrecorded, as they were before it.
        self._overlay: dict[Chunk, np.ndarray] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        folder: str | os.PathLike[str],
        shape: Iterable[int],
        dtype: Any = np.uint32,
        *,
        image: Mapping[str, Any] | None = None,
        placement: Mapping[str, Any] | None = None,
        initial: np.ndarray | None = None,
    ) -> ProjectStore:
        """Start a project in ``folder`` (created if needed; it must not hold a project yet).

        Args:
            shape: the label volume's shape; the last two axes are a plane.
            dtype: an integer dtype.
            image: what the labels belong to (``path``, ``name``, ``rgb``...), for resuming.
            placement: the Labels layer's ``scale``, ``translate``... (lists of numbers).
            initial: labels already there (e.g. a layer that held labels before saving began),
                written as the volume's starting content.

        Raises:
            ProjectError: the folder already holds a project, or the shape/dtype cannot be used.
            ProjectWriteError: the folder cannot be written.
        """
        folder = Path(folder).expanduser()
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        if len(shape) < 2 or min(shape) < 1:
            raise ProjectError(f"a project needs a label volume of 2 or more axes, got {shape}.")
        if dtype.kind not in "iu":
            raise ProjectError(f"label ids need an integer dtype, got {dtype}.")
        if (folder / MANIFEST_NAME).exists():
            raise ProjectError(
                f"{folder} already holds a project; open it to continue it, or choose an "
                "empty folder."
            )
        if folder.is_dir() and any(folder.iterdir()):
            # A project writes several files and folders: never among the user's own files.
            raise ProjectError(
                f"{folder} is not empty; choose a new or empty folder for the project (for "
                "example <image name>.mobilesam beside the image)."
            )
        if folder.exists() and not folder.is_dir():
            raise ProjectError(f"{folder} is a file; choose a folder for the project.")
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "shape": list(shape),
            "dtype": dtype.name,
            "labels": LABELS_NAME,
            "chunks": [1] * (len(shape) - 2) + list(shape[-2:]),
            "records": RECORDS_NAME,
            "image": dict(image or {}),
            "placement": dict(placement or {}),
            "created": now_iso(),
            "package_version": package_version(),
        }
        store = cls(folder, manifest, writable=True)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            store._lock()
        except OSError as exc:
            raise _write_failure(folder, exc) from exc
        try:
            import zarr

            (folder / RECORDS_NAME).mkdir(exist_ok=True)
            (folder / JOURNAL_NAME).mkdir(exist_ok=True)
            store._array = zarr.open_array(
                str(folder / LABELS_NAME),
                mode="w",
                shape=shape,
                dtype=dtype,
                chunks=tuple(manifest["chunks"]),
                fill_value=0,
                zarr_format=2,
            )
            if initial is not None and np.asarray(initial).any():
                store._write_initial(np.asarray(initial))
            # The manifest last: a folder without it is not a project yet.
            write_bytes_atomically(folder / MANIFEST_NAME, _json_bytes(manifest))
        except OSError as exc:
            store.close()
            raise _write_failure(folder, exc) from exc
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, folder: str | os.PathLike[str], writable: bool = True) -> ProjectStore:
        """Open an existing project; a writable store finishes or undoes an interrupted step.

        Raises:
            ProjectError: not a project, another format version, a broken record, a record
                that names a plane outside the volume.
            ProjectLockedError: another process (or another store here) writes the folder.
        """
        folder = Path(folder).expanduser()
        manifest = read_manifest(folder)
        store = cls(folder, manifest, writable)
        if writable:
            try:
                store._lock()
            except OSError as exc:
                raise _write_failure(folder, exc) from exc
        try:
            import zarr

            labels = folder / manifest.get("labels", LABELS_NAME)
            try:
                store._array = zarr.open_array(str(labels), mode="r+" if writable else "r")
            except Exception as exc:
                raise ProjectError(f"{labels} is not a readable zarr array ({exc}).") from exc
            if tuple(store._array.shape) != store.shape:
                raise ProjectError(
                    f"{labels} has shape {tuple(store._array.shape)}, the manifest says "
                    f"{store.shape}."
                )
            if writable:
                store._recover()
            else:
                store._overlay = store._unrecorded_planes()
            store._records = store._read_records()
        except BaseException:
            store.close()
            raise
        return store

    def _write_initial(self, initial: np.ndarray) -> None:
        """Labels the volume held before saving began: into the volume and, unchanged, into
        ``initial.zarr`` (what a replay starts from)."""
        import zarr

        if initial.shape != self.shape:
            raise ProjectError(f"initial labels have shape {initial.shape}, not {self.shape}.")
        copy = zarr.open_array(
            str(self.folder / INITIAL_NAME), mode="w", shape=self.shape, dtype=self.dtype,
            chunks=tuple(self.manifest["chunks"]), fill_value=0, zarr_format=2,
        )  # fmt: skip
        for chunk in self.chunks():
            if initial[chunk].any():
                self._array[chunk] = initial[chunk]
                copy[chunk] = initial[chunk]
        self.manifest["initial"] = INITIAL_NAME

    def read_initial(self) -> np.ndarray:
        """The labels the volume held before the first step (zeros if none)."""
        name = self.manifest.get("initial")
        if not name:
            return np.zeros(self.shape, dtype=self.dtype)
        import zarr

        return np.array(zarr.open_array(str(self.folder / name), mode="r")[...], self.dtype)

    def _lock(self) -> None:
        """Take the folder's lock file, or raise :class:`ProjectLockedError`."""
        key = str(self.folder.resolve())
        with _OPEN_LOCK:
            if key in _OPEN_HERE:
                raise ProjectLockedError(
                    f"{self.folder} is already being saved to from this napari session; "
                    "each project folder takes one writer."
                )
            lock = self.folder / LOCK_NAME
            token = uuid.uuid4().hex
            content = _json_bytes({"pid": os.getpid(), "host": socket.gethostname(),
                                   "token": token, "since": now_iso()})  # fmt: skip
            for _ in range(2):
                try:
                    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    if not self._lock_is_stale(lock):
                        raise
                    lock.unlink(missing_ok=True)  # its writer is gone: take it over
                    continue
                with os.fdopen(fd, "wb") as handle:
                    handle.write(content)
                self._token = token
                _OPEN_HERE.add(key)
                return
        raise AssertionError("unreachable")

    def _lock_is_stale(self, lock: Path) -> bool:
        try:
            holder = json.loads(lock.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except (OSError, ValueError, KeyError, TypeError):
            holder, pid, host = {}, -1, socket.gethostname()  # unreadable: a killed writer
        if host == socket.gethostname() and (pid == os.getpid() or not _pid_alive(pid)):
            return True  # a killed writer, or a store of this process that was never closed
        raise ProjectLockedError(
            f"{self.folder} is being saved to by process {pid} on {host} (since "
            f"{holder.get('since', '?')}); close that napari first, or choose another folder. "
            f"If that process is gone, delete {lock}."
        )

    def close(self) -> None:
        """Release the lock (a read-only store holds none)."""
        if self._token is None:
            return
        lock = self.folder / LOCK_NAME
        with contextlib.suppress(OSError, ValueError):
            if json.loads(lock.read_text()).get("token") == self._token:
                lock.unlink()
        with _OPEN_LOCK:
            _OPEN_HERE.discard(str(self.folder.resolve()))
        self._token = None

    def __enter__(self) -> ProjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def chunks(self) -> list[Chunk]:
        """Every plane's index on the leading axes, in order."""
        return [tuple(int(i) for i in c) for c in np.ndindex(*self.shape[:-2])]

    def read_plane(self, chunk: Chunk) -> np.ndarray:
        """(H, W) labels of one plane."""
        chunk = tuple(chunk)
        if chunk in self._overlay:
            return self._overlay[chunk].copy()
        return np.asarray(self._array[chunk])

    def read_labels(self) -> np.ndarray:
        """The whole label volume as a writable numpy array (without a step a killed writer
        left unrecorded)."""
        volume = np.array(self._array[...], dtype=self.dtype)
        for chunk, plane in self._overlay.items():
            volume[chunk] = plane
        return volume

    def _unrecorded_planes(self) -> dict[Chunk, np.ndarray]:
        """Planes as they were before steps whose record was never written (oldest wins)."""
        planes: dict[Chunk, np.ndarray] = {}
        journal = self.folder / JOURNAL_NAME
        for path in sorted(journal.glob("[0-9]*.npz"), reverse=True) if journal.is_dir() else []:
            if self._record_path(int(path.stem)).exists():
                continue
            try:
                with np.load(path) as old:
                    planes.update({_chunk(key): old[key] for key in old.files})
            except (OSError, ValueError):
                continue  # a journal cut short: its step had not written a plane yet
        return planes

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every step's record, in step order."""
        return list(self._records)

    @property
    def next_step(self) -> int:
        return (self._records[-1]["step"] + 1) if self._records else 1

    def _read_records(self) -> list[dict[str, Any]]:
        records = []
        folder = self.folder / self.manifest.get("records", RECORDS_NAME)
        for path in sorted(folder.glob("[0-9]*.json")) if folder.is_dir() else []:
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                step = int(record["step"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ProjectError(f"record {path} cannot be read ({exc}).") from exc
            if step != int(path.stem):
                raise ProjectError(f"record {path} says step {step}; its name says {path.stem}.")
            for chunk in record.get("planes", []):
                self._check_chunk(chunk, path)
            records.append(record)
        return records

    def _check_chunk(self, chunk: Any, where: Path | str) -> Chunk:
        leading = self.shape[:-2]
        try:
            chunk = tuple(int(i) for i in chunk)
        except (TypeError, ValueError):
            chunk = (-1,)
        inside = len(chunk) == len(leading) and all(
            0 <= i < n for i, n in zip(chunk, leading, strict=True)
        )
        if not inside:
            raise ProjectError(
                f"record {where} refers to plane {list(chunk)}, which is not in the label "
                f"volume of shape {list(self.shape)} (planes are indexed on its first "
                f"{len(leading)} axes). The folder was changed by hand or belongs to another "
                "image."
            )
        return chunk

    # ------------------------------------------------------------------ writing
    def _journal_path(self, step: int) -> Path:
        return self.folder / JOURNAL_NAME / f"{step:06d}.npz"

    def _record_path(self, step: int) -> Path:
        return self.folder / self.manifest.get("records", RECORDS_NAME) / f"{step:06d}.json"

    def write_step(
        self, planes: Mapping[Chunk, np.ndarray], record: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Save the planes a step changed, then its record; returns the record as written.

        Args:
            planes: (H, W) labels of every plane the step changed, by plane index.
            record: the step's description (``kind``, ``objects``...); ``step``, ``planes``,
                ``time`` and ``format_version`` are filled in here.

        Raises:
            ProjectWriteError: the folder cannot be written; the step is not recorded, and the
                planes written before the failure are put back.
        """
        if not self.writable or self._token is None:
            raise ProjectError(f"{self.folder} was opened read-only (or closed).")
        step = self.next_step
        chunks = [self._check_chunk(c, f"step {step}") for c in planes]
        full = {
            "format_version": FORMAT_VERSION,
            "step": step,
            "time": now_iso(),
            **dict(record),
            "planes": [list(c) for c in chunks],
        }
        journal = self._journal_path(step)
        try:
            old = {_key(c): self.read_plane(c) for c in chunks}
            with tempfile.SpooledTemporaryFile() as buffer:
                np.savez_compressed(buffer, **old)
                buffer.seek(0)
                write_bytes_atomically(journal, buffer.read())
            for number, chunk in enumerate(chunks):
                data = np.asarray(planes[chunk], dtype=self.dtype)
                self._array[chunk] = data
                if number == 0:
                    _test_gate(step)
            write_bytes_atomically(self._record_path(step), _json_bytes(full))
        except OSError as exc:
            with contextlib.suppress(Exception):
                self._roll_back(journal)
            raise _write_failure(self.folder, exc) from exc
        with contextlib.suppress(OSError):  # a stale journal of a recorded step is harmless
            journal.unlink()
        self._records.append(full)
        return full

    def _roll_back(self, journal: Path) -> None:
        """Put back the planes saved in ``journal`` and remove it."""
        if journal.exists():
            with np.load(journal) as old:
                for key in old.files:
                    self._array[_chunk(key)] = old[key]
            journal.unlink()

    def _recover(self) -> None:
        """Finish what a killed writer left: undo unrecorded steps, drop temporary files."""
        journal = self.folder / JOURNAL_NAME
        for path in sorted(journal.glob("[0-9]*.npz"), reverse=True) if journal.is_dir() else []:
            if self._record_path(int(path.stem)).exists():
                path.unlink()  # recorded: the step is whole
            else:
                try:
                    self._roll_back(path)
                except (OSError, ValueError) as exc:
                    raise ProjectError(
                        f"the interrupted step in {path} cannot be undone ({exc})."
                    ) from exc
        for folder in (self.folder, self.folder / RECORDS_NAME, journal):
            sweep_temporaries(folder)
        # zarr's local store writes each chunk to "<key>.<random>.partial", then renames it.
        for partial in (self.folder / self.manifest.get("labels", LABELS_NAME)).glob("*.partial"):
            with contextlib.suppress(OSError):
                partial.unlink()


def _key(chunk: Chunk) -> str:
    return "plane" + "".join(f"_{i}" for i in chunk)


def _chunk(key: str) -> Chunk:
    return tuple(int(i) for i in key.split("_")[1:])


def _test_gate(step: int) -> None:
    wanted = os.environ.get(TEST_GATE_ENV)
    if wanted and wanted.strip() == str(step):
        print(f"project write blocked in step {step}", file=sys.stderr, flush=True)
        threading.Event().wait()  # until the test kills this process


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a project folder, checked for format and version.

    Raises:
        ProjectError: no manifest, not a project, or another format version.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ProjectError(f"{folder} is not a napari-mobilesam project (no {MANIFEST_NAME}).")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProjectError(f"{path} cannot be read ({exc}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ProjectError(f"{path} is not a napari-mobilesam project manifest.")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ProjectError(
            f"{folder} was written in project format version {version}; this version of "
            f"napari-mobilesam reads version {FORMAT_VERSION}. Open it with the version that "
            f"wrote it (package {manifest.get('package_version', '?')})."
        )
    try:
        shape = [int(s) for s in manifest["shape"]]
        np.dtype(manifest["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProjectError(f"{path} lacks a valid shape or dtype ({exc}).") from exc
    if len(shape) < 2:
        raise ProjectError(f"{path} gives a shape of fewer than 2 axes: {shape}.")
    return manifest


def is_project(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` has a project manifest (any version)."""
    return (Path(folder) / MANIFEST_NAME).is_file()
