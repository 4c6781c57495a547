"""Atomic writes: permissions under the umask, nothing left on failure, the sweep of stale
temporaries (and only of this package's)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from napari_mobilesam.engine.atomic_files import (
    atomic_target,
    is_temporary,
    process_umask,
    sweep_temporaries,
    temporary_name,
    write_atomically,
    write_bytes_atomically,
    write_text_atomically,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_process_umask_reads_the_current_mask(umask_027) -> None:
    assert process_umask() == 0o027


@posix_only
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_a_file_gets_what_a_plain_write_gives(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")

        # A writer that makes owner-only files (as mkstemp does) still ends with normal modes.
        def owner_only(tmp: Path) -> None:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            os.write(fd, b"data")
            os.close(fd)

        out = write_atomically(tmp_path / "out.bin", owner_only)
    finally:
        os.umask(old)
    assert _mode(out) == _mode(plain) == 0o666 & ~mask
    assert out.read_bytes() == b"data"


@posix_only
def test_a_folder_and_its_files_get_umask_modes(tmp_path: Path, umask_027) -> None:
    def store(tmp: Path) -> None:
        (tmp / "c" / "0").mkdir(parents=True, mode=0o700)
        (tmp / "c" / "0" / "0").write_bytes(b"chunk")
        os.chmod(tmp / "c" / "0" / "0", 0o600)
        (tmp / "zarr.json").write_text("{}")

    out = write_atomically(tmp_path / "labels.zarr", store)
    assert _mode(out) == 0o750
    assert _mode(out / "c" / "0") == 0o750
    assert _mode(out / "c" / "0" / "0") == 0o640
    assert _mode(out / "zarr.json") == 0o640


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "labels.tif"
    target.write_bytes(b"old")

    def fails(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(target, fails)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_an_interrupted_folder_write_leaves_nothing(tmp_path: Path) -> None:
    def interrupted(tmp: Path) -> None:
        (tmp / "sub").mkdir(parents=True)
        (tmp / "sub" / "chunk").write_bytes(b"1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "out.zarr", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        write_atomically(tmp_path / "out.npy", lambda tmp: None)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_is_replaced_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "out.zarr"
    target.mkdir()
    (target / "theirs.txt").write_text("keep me")

    def store(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "new").write_text("new")

    with pytest.raises(FileExistsError, match="not replaced"):
        write_atomically(target, store)
    assert (target / "theirs.txt").read_text() == "keep me"
    write_atomically(target, store, replace_folder=True)
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_a_file_never_replaces_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "labels.tif"
    target.mkdir()
    with pytest.raises(IsADirectoryError):
        write_bytes_atomically(target, b"x")
    assert target.is_dir() and list(tmp_path.iterdir()) == [target]


def test_text_and_bytes_helpers(tmp_path: Path) -> None:
    assert write_text_atomically(tmp_path / "a.json", "{}\n").read_text() == "{}\n"
    assert write_bytes_atomically(tmp_path / "b.bin", b"\0\1").read_bytes() == b"\0\1"
    # The context-manager form: the temporary is named as this package's until the rename.
    with atomic_target(tmp_path / "c.txt") as tmp:
        assert is_temporary(tmp) and tmp.parent == tmp_path
        tmp.write_text("c")
    assert (tmp_path / "c.txt").read_text() == "c"


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def _stale_name(target: Path, pid: int) -> Path:
    name = temporary_name(target)
    # The name carries host-pid-random: put in another process' pid.
    head, token = name.name[: -len(".napari-mobilesam.partial")].rsplit(".", 1)
    host, _pid, rand = token.split("-")
    return name.with_name(f"{head}.{host}-{pid}-{rand}.napari-mobilesam.partial")


@posix_only
def test_sweep_removes_stale_temporaries_only(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale_file = _stale_name(tmp_path / "a.tif", dead)
    stale_file.write_bytes(b"x" * 10)
    stale_store = _stale_name(tmp_path / "b.zarr", dead)
    (stale_store / "c").mkdir(parents=True)
    mine = temporary_name(tmp_path / "c.tif")  # this live process: kept
    mine.write_bytes(b"x")
    new = _stale_name(tmp_path / "d.tif", dead)  # younger than the cut-off: kept
    new.write_bytes(b"x")
    users = [tmp_path / ".a.tif.partial", tmp_path / "a.tif", tmp_path / ".hidden"]
    for path in users:
        path.write_bytes(b"user")
    old = 1_000_000.0
    for path in (stale_file, stale_store, mine):
        os.utime(path, (old, old))
    removed = sweep_temporaries(tmp_path, older_than=old + 10)
    assert removed == 2
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {mine.name, new.name} | {p.name for p in users}


def test_sweep_of_a_missing_folder_is_zero(tmp_path: Path) -> None:
    assert sweep_temporaries(tmp_path / "nope") == 0


@posix_only
def test_the_disk_cache_writes_readable_entries_and_sweeps_its_leftovers(
    tmp_path: Path, umask_027
) -> None:
    import numpy as np

    from napari_mobilesam.engine.disk_cache import EMBEDDING_SHAPE, DiskEmbeddingCache

    cache = DiskEmbeddingCache(tmp_path, "model")
    key = cache.key(np.zeros((4, 4, 3), np.uint8))
    assert cache.put(key, np.ones(EMBEDDING_SHAPE, np.float32))
    entry = next(tmp_path.glob("*/*.npy"))
    assert _mode(entry) == 0o640
    left = _stale_name(entry, _dead_pid())
    left.write_bytes(b"half an entry")
    os.utime(left, (1_000_000.0, 1_000_000.0))
    assert cache.sweep() == 1
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]
    assert cache.get(key) is not None
