"""The project folder: per-plane chunks, one record per step, journal, lock, bad folders."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_mobilesam.engine import project_store
from napari_mobilesam.engine.project_store import (
    FORMAT_VERSION,
    JOURNAL_NAME,
    LOCK_NAME,
    ProjectError,
    ProjectLockedError,
    ProjectStore,
    ProjectWriteError,
)


def _chunk_files(folder: Path) -> dict[str, int]:
    """Chunk file name -> inode (an atomic rewrite gives a new inode)."""
    labels = folder / "labels.zarr"
    return {p.name: p.stat().st_ino for p in labels.iterdir() if not p.name.startswith(".")}


def test_a_step_on_one_plane_writes_that_plane_and_one_record(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    with ProjectStore.create(folder, (40, 16, 20), np.uint32) as store:
        first = np.zeros((16, 20), np.uint32)
        first[3:6, 4:9] = 1
        store.write_step({(5,): first}, {"kind": "write", "objects": [{"id": 1}]})
        before = _chunk_files(folder)
        second = np.zeros((16, 20), np.uint32)
        second[1:3, 1:3] = 2
        record = store.write_step({(17,): second}, {"kind": "write", "objects": [{"id": 2}]})
        after = _chunk_files(folder)
    # Only plane 17's chunk appeared; plane 5's file is the same file (not rewritten).
    assert set(after) - set(before) == {"17.0.0"}
    assert after["5.0.0"] == before["5.0.0"]
    assert record["step"] == 2 and record["planes"] == [[17]]
    # Readable with zarr and json alone.
    array = zarr.open_array(str(folder / "labels.zarr"), mode="r")
    assert array.chunks == (1, 16, 20)
    assert np.array_equal(array[17], second) and np.array_equal(array[5], first)
    saved = json.loads((folder / "records" / "000002.json").read_text())
    assert saved["objects"] == [{"id": 2}] and saved["format_version"] == FORMAT_VERSION
    manifest = json.loads((folder / "project.json").read_text())
    assert manifest["shape"] == [40, 16, 20] and manifest["dtype"] == "uint32"
    assert not (folder / LOCK_NAME).exists()  # closed: the lock is gone
    assert list((folder / JOURNAL_NAME).iterdir()) == []


def test_reopened_store_has_labels_and_records_and_appends(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    plane = np.arange(12, dtype=np.uint16).reshape(3, 4)
    with ProjectStore.create(folder, (3, 4), np.uint16) as store:
        store.write_step({(): plane}, {"kind": "write"})
    with ProjectStore.open(folder) as store:
        assert np.array_equal(store.read_labels(), plane)
        assert [r["step"] for r in store.records] == [1]
        store.write_step({(): plane * 2}, {"kind": "write"})
    with ProjectStore.open(folder, writable=False) as store:
        assert [r["step"] for r in store.records] == [1, 2]
        assert np.array_equal(store.read_labels(), plane * 2)


def test_initial_labels_are_kept_for_replay(tmp_path: Path) -> None:
    initial = np.zeros((2, 5, 6), np.uint32)
    initial[1, 2, 2] = 7
    with ProjectStore.create(tmp_path / "p", initial.shape, initial=initial) as store:
        assert np.array_equal(store.read_labels(), initial)
        assert np.array_equal(store.read_initial(), initial)


def test_a_failed_write_rolls_back_the_planes_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "p"
    store = ProjectStore.create(folder, (3, 4, 5), np.uint32)
    store.write_step({(0,): np.ones((4, 5))}, {"kind": "write"})
    real = project_store.write_bytes_atomically

    def full_disk(target, data):
        if "records" in str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(target, data)

    monkeypatch.setattr(project_store, "write_bytes_atomically", full_disk)
    with pytest.raises(ProjectWriteError, match="disk is full") as info:
        store.write_step({(0,): np.full((4, 5), 3), (2,): np.full((4, 5), 3)}, {"kind": "write"})
    assert str(folder) in str(info.value) and "still in napari" in str(info.value)
    # Both planes were written before the record failed; both are back.
    assert np.array_equal(store.read_plane((0,)), np.ones((4, 5)))
    assert not store.read_plane((2,)).any()
    assert len(store.records) == 1 and not list((folder / JOURNAL_NAME).iterdir())
    store.close()


def test_open_undoes_a_step_whose_record_was_never_written(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    with ProjectStore.create(folder, (2, 3, 3), np.uint32) as store:
        store.write_step({(1,): np.full((3, 3), 4)}, {"kind": "write"})
    # What a writer killed between its chunk and its record leaves: a journal and a new chunk.
    old = {"plane_1": np.full((3, 3), 4, np.uint32)}
    np.savez_compressed(folder / JOURNAL_NAME / "000002.npz", **old)
    zarr.open_array(str(folder / "labels.zarr"), mode="r+")[1] = 9
    with ProjectStore.open(folder) as store:
        assert np.array_equal(store.read_plane((1,)), np.full((3, 3), 4))
        assert store.next_step == 2
    assert not list((folder / JOURNAL_NAME).iterdir())


def test_another_format_version_is_refused_with_a_message(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    ProjectStore.create(folder, (3, 3)).close()
    manifest = json.loads((folder / "project.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (folder / "project.json").write_text(json.dumps(manifest))
    with pytest.raises(ProjectError, match=f"format version {FORMAT_VERSION + 1}.*reads version"):
        ProjectStore.open(folder)
    with pytest.raises(ProjectError, match="not a napari-mobilesam project"):
        ProjectStore.open(tmp_path)


def test_a_record_naming_a_missing_plane_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    with ProjectStore.create(folder, (4, 3, 3)) as store:
        store.write_step({(2,): np.ones((3, 3))}, {"kind": "write"})
    path = folder / "records" / "000001.json"
    record = json.loads(path.read_text())
    record["planes"] = [[9]]
    path.write_text(json.dumps(record))
    with pytest.raises(ProjectError, match=r"000001.json refers to plane \[9\]"):
        ProjectStore.open(folder)


def test_a_second_writer_is_refused_here_and_from_another_process(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    store = ProjectStore.create(folder, (3, 3))
    with pytest.raises(ProjectLockedError, match="already being saved to"):
        ProjectStore.open(folder)
    store.close()
    # Another live process holds it: refused, naming that process.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\n"
         "from napari_mobilesam.engine.project_store import ProjectStore\n"
         f"s = ProjectStore.open({str(folder)!r}); print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ProjectLockedError, match=f"process {holder.pid}"):
            ProjectStore.open(folder)
    finally:
        holder.kill()
        holder.wait()
    # Its writer is dead now (killed, lock left behind): the lock is taken over.
    assert (folder / LOCK_NAME).exists()
    with ProjectStore.open(folder) as store:
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        store.write_step({(): np.ones((3, 3))}, {"kind": "write"})


def test_a_read_only_folder_fails_at_the_first_write_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, which ignores file modes: the error is injected where it occurs.
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)

    monkeypatch.setattr(project_store.os, "open", read_only)
    with pytest.raises(ProjectWriteError, match="not writable.*Read-only file system"):
        ProjectStore.create(tmp_path / "p", (3, 3))


def test_bad_shapes_and_dtypes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="2 or more axes"):
        ProjectStore.create(tmp_path / "a", (5,))
    with pytest.raises(ProjectError, match="integer dtype"):
        ProjectStore.create(tmp_path / "b", (5, 5), np.float32)
    ProjectStore.create(tmp_path / "c", (5, 5)).close()
    with pytest.raises(ProjectError, match="already holds a project"):
        ProjectStore.create(tmp_path / "c", (5, 5))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("the user's own file")
    with pytest.raises(ProjectError, match="is not empty; choose a new or empty folder"):
        ProjectStore.create(tmp_path / "d", (5, 5))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["notes.txt"]
    with pytest.raises(ProjectError, match="is a file"):
        ProjectStore.create(tmp_path / "d" / "notes.txt", (5, 5))
