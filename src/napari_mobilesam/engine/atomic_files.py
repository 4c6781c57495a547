"""Atomic writes of files and folders (zarr stores), and the sweep of stale temporaries.

Every output of the package goes through :func:`write_atomically` (or its context-manager form,
:func:`atomic_target`): the writer fills a temporary name in the target's own folder, the
result is flushed to disk (``fsync``) and renamed onto the target with :func:`os.replace`, which
is atomic on one filesystem. A reader therefore sees the old output, the new one, or nothing;
never half a file. On any error (also Ctrl+C) the temporary is removed.

Temporaries are hidden and carry this package's mark, ``.<target name>.<host>-<pid>-<random>
.napari-mobilesam.partial``, so :func:`sweep_temporaries` can tell them from the user's files
and remove those a killed process left behind (``SIGKILL``/``SIGTERM`` run no clean-up).

Outputs get the permissions a plain ``open(path, "w")`` would give under the process' umask
(e.g. 0644), not the owner-only 0600 of :func:`tempfile.mkstemp`: on a shared filesystem other
users and other jobs of a cluster must be able to read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_MARK = ".napari-mobilesam.partial"
# When this module was imported: in a command-line run, about when the run started.
IMPORTED_AT = time.time()

_UMASK_LOCK = threading.Lock()


def _host_tag() -> str:
    """A short, file-name-safe tag of this machine (temporaries of other hosts are not ours to
    judge alive or dead)."""
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=3).hexdigest()


_HOST = _host_tag()


def temporary_name(target: str | os.PathLike[str]) -> Path:
    """A fresh temporary path beside ``target`` (not created), marked as this package's."""
    target = Path(target)
    token = f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    return target.with_name(f".{target.name}.{token}{TEMP_MARK}")


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a temporary of :func:`temporary_name`."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_MARK)


def process_umask() -> int:
    """The process' umask (read without changing it where the OS allows)."""
    try:  # Linux: no window in which another thread would create a file with umask 0
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _give_normal_permissions(path: Path) -> None:
    """Files 0666 and folders 0777, less the umask: what a plain write would have given."""
    umask = process_umask()
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            os.chmod(root, dir_mode)
            for name in files:
                os.chmod(os.path.join(root, name), file_mode)
            for name in dirs:  # os.walk visits them next; chmod first so they can be listed
                os.chmod(os.path.join(root, name), dir_mode)
    else:
        os.chmod(path, file_mode)


def _fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_folder(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename) to disk; not possible on every OS, then skipped."""
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sync(path: Path) -> None:
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                _fsync_file(os.path.join(root, name))
            _fsync_folder(root)
    else:
        _fsync_file(path)


def remove_path(path: str | os.PathLike[str]) -> None:
    """Remove a file, link or folder tree if present (never following a link to a folder)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _install(tmp: Path, target: Path, replace_folder: bool) -> None:
    """Rename the finished ``tmp`` onto ``target``."""
    if target.is_dir() and not target.is_symlink():
        if not tmp.is_dir():
            raise IsADirectoryError(f"{target} is a folder; a file cannot replace it")
        if not replace_folder:
            raise FileExistsError(f"{target} already exists (a folder); it was not replaced")
        # A folder cannot be renamed over a non-empty one: move the old one aside first, so
        # the target's name is without a whole result only for the moment between two renames.
        old = temporary_name(target)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        remove_path(old)
    elif tmp.is_dir() and target.exists():
        raise FileExistsError(f"{target} is a file; a folder cannot replace it")
    else:
        os.replace(tmp, target)
    _fsync_folder(target.parent)


@contextlib.contextmanager
def atomic_target(
    target: str | os.PathLike[str], *, replace_folder: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block ends without an error, the
    file or folder written there is synced and renamed onto ``target``.

    The temporary does not exist yet: the writer creates a file or a folder (a zarr store)
    under that name. An existing file at ``target`` is replaced; an existing folder only with
    ``replace_folder`` (the caller decides whether that folder is one it may replace).

    Raises:
      FileExistsError / IsADirectoryError: ``target`` is a folder that may not be replaced, or
        of the other kind (file vs folder) than what was written. Nothing is left behind.
      OSError: the write or the rename failed (disk full, no permission); nothing is left.
    """
    target = Path(target)
    tmp = temporary_name(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {target}")
        _give_normal_permissions(tmp)
        _sync(tmp)
        _install(tmp, target, replace_folder)
    except BaseException:
        remove_path(tmp)
        raise


def write_atomically(
    target: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    replace_folder: bool = False,
) -> Path:
    """Call ``write(temporary_path)``, then put what it wrote at ``target`` (see
    :func:`atomic_target`); returns ``target``."""
    with atomic_target(target, replace_folder=replace_folder) as tmp:
        write(tmp)
    return Path(target)


def write_bytes_atomically(target: str | os.PathLike[str], data: bytes) -> Path:
    """``Path.write_bytes``, atomically."""
    return write_atomically(target, lambda tmp: tmp.write_bytes(data))


def write_text_atomically(
    target: str | os.PathLike[str], text: str, encoding: str = "utf-8"
) -> Path:
    """``Path.write_text``, atomically."""
    return write_atomically(target, lambda tmp: tmp.write_text(text, encoding=encoding))


def _writer_alive(path: Path) -> bool:
    """Whether the process that named this temporary still runs on this host. A temporary of
    another host (or on an OS without a harmless liveness probe: Windows' ``os.kill`` would end
    the process) is judged by its age alone: False."""
    token = path.name[: -len(TEMP_MARK)].rsplit(".", 1)[-1]
    host, _, rest = token.partition("-")
    pid_text = rest.partition("-")[0]
    if host != _HOST or not pid_text.isdigit() or os.name != "posix":
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it runs, as another user
        return True
    return True


def sweep_temporaries(folder: str | os.PathLike[str], *, older_than: float | None = None) -> int:
    """Remove this package's stale temporaries in ``folder`` (not recursive); how many.

    A temporary is stale when it was last modified before ``older_than`` (a ``time.time()``;
    default: when this module was imported, i.e. before the current run) and the process that
    wrote it is gone: a temporary of a live process on this host is kept whatever its age, so
    two runs writing into one folder do not break each other. Other files are never touched.
    """
    cutoff = IMPORTED_AT if older_than is None else older_than
    try:
        entries = list(Path(folder).iterdir())
    except OSError:  # missing or unreadable: nothing to sweep
        return 0
    removed = 0
    for path in entries:
        if not is_temporary(path):
            continue
        try:
            if path.lstat().st_mtime >= cutoff or _writer_alive(path):
                continue
        except OSError:  # gone meanwhile
            continue
        remove_path(path)
        removed += 1
    return removed


__all__ = [
    "IMPORTED_AT",
    "TEMP_MARK",
    "atomic_target",
    "is_temporary",
    "process_umask",
    "remove_path",
    "sweep_temporaries",
    "temporary_name",
    "write_atomically",
    "write_bytes_atomically",
    "write_text_atomically",
]
