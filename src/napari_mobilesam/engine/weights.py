"""Find, download and verify the MobileSAM weights (``mobile_sam.pt``).

Resolution order (first match wins, see :func:`describe_resolution`):

1. an explicit path passed by the caller;
2. the environment variable ``NAPARI_MOBILESAM_WEIGHTS``;
3. ``mobile_sam.pt`` in the user cache folder (:func:`cache_dir`: the platform's, or the folder
   named by ``NAPARI_MOBILESAM_CACHE``), used only when its sha256 is the official one;
4. a download of the official file into that cache folder (sha256-checked before it is kept).

A file named explicitly (1 or 2) is accepted whatever its hash, so fine-tuned weights work; its
layout is checked when it is loaded (``napari_mobilesam.model.checkpoint`` reads files safely and
says what a wrong file is).

This module imports neither napari nor Qt, nor torch, so the widget can describe the weights before
torch is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari_mobilesam.model.checkpoint import (  # the official file's identity
    WEIGHTS_FILENAME,
    WEIGHTS_SHA256,
    WEIGHTS_SIZE,
    WEIGHTS_URL,
    load_weights_state_dict,
)

if TYPE_CHECKING:
    from napari_mobilesam.model.sam import Sam

logger = logging.getLogger(__name__)

ENV_WEIGHTS = "NAPARI_MOBILESAM_WEIGHTS"
ENV_CACHE = "NAPARI_MOBILESAM_CACHE"
CACHE_APP_NAME = "napari-mobilesam"

# Chunks of 256 KiB give ~155 progress updates for the 40 MB file: smooth in a GUI without a
# Python call and a flush per KiB (pooch's default chunk is 1 KiB).
DOWNLOAD_CHUNK_SIZE = 256 * 1024
# requests' (connect, read) timeouts in seconds: fail fast when offline, tolerate slow links.
DOWNLOAD_TIMEOUT_S: tuple[float, float] = (15.0, 60.0)

# The ``kind`` of a :class:`WeightsSource`: also the words the widget shows.
SOURCE_EXPLICIT = "explicit path"
SOURCE_ENV = ENV_WEIGHTS
SOURCE_CACHE = "cache"
SOURCE_DOWNLOAD = "download"

ProgressHook = Callable[[int, int], None]
"""``hook(bytes_done, total_bytes)``; ``total_bytes`` is 0 when the server sends no length."""


class WeightsDownloadError(RuntimeError):
    """The official weights could not be obtained: the download failed, or downloads are off.

    The message names the URL, the expected sha256 and the exact file to create by hand (and the
    environment-variable alternative); the same facts are attributes for a GUI.
    """

    def __init__(self, message: str, *, url: str, sha256: str, target: Path) -> None:
        super().__init__(message)
        self.url = url
        self.sha256 = sha256
        self.target = target  # where the downloaded (or hand-copied) file must go


@dataclass(frozen=True)
class WeightsSource:
    """Which weights file would be used, and why (for the widget and for logs).

    Attributes:
      kind: ``"explicit path"``, ``"NAPARI_MOBILESAM_WEIGHTS"``, ``"cache"`` or ``"download"``.
      path: the file to load; for ``"download"``, where the download will be saved.
      reason: one sentence saying why this source was chosen.
      url: the download URL (only for ``"download"``).
    """

    kind: str
    path: Path
    reason: str
    url: str | None = None

    @property
    def needs_download(self) -> bool:
        return self.kind == SOURCE_DOWNLOAD

    def __str__(self) -> str:
        return f"{self.kind}: {self.path} ({self.reason})"


# --- Locations ---------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The package's cache folder: the downloaded ``mobile_sam.pt``, and under it the
    embeddings (:func:`~napari_mobilesam.engine.disk_cache.default_cache_folder`) and the
    runtimes' graphs. The one place that computes it.

    ``NAPARI_MOBILESAM_CACHE`` if set (``~`` expanded), else the platform's user cache folder for
    ``napari-mobilesam`` (``~/.cache/napari-mobilesam`` on Linux, ``~/Library/Caches/...`` on
    macOS, ``%LOCALAPPDATA%\\napari-mobilesam\\Cache`` on Windows; what ``pooch.os_cache``
    gives too).
    """
    override = os.environ.get(ENV_CACHE, "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(CACHE_APP_NAME)).expanduser()


def _user_file(raw: str | os.PathLike[str], origin: str) -> Path:
    """A file the user named; missing or a folder -> FileNotFoundError (never a silent fallback)."""
    path = Path(raw).expanduser()
    if path.is_file():
        return path
    state = "is a folder, not a file" if path.is_dir() else "does not exist"
    hint = f" (set by the environment variable {ENV_WEIGHTS})" if origin == SOURCE_ENV else ""
    raise FileNotFoundError(
        f"MobileSAM weights file not found: {path} {state}{hint}. "
        f"Point it at the {WEIGHTS_FILENAME} file itself"
        + (f", or unset {ENV_WEIGHTS} to use the cache/download." if hint else ".")
    )


# --- Hashing -----------------------------------------------------------------------------------

# (resolved path, size, mtime_ns, inode) -> sha256, so that describing and then resolving the
# same cached file hashes its 40 MB once. A rewritten file changes mtime/inode, so no stale hit.
_HASH_MEMO: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (memoised on path, size, mtime and inode)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASH_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if len(_HASH_MEMO) > 32:  # a handful of files per session; keep the memo tiny
            _HASH_MEMO.clear()
        _HASH_MEMO[key] = digest.hexdigest()
    return _HASH_MEMO[key]


def _cached_file_problem(path: Path, sha256: str, size: int | None) -> str | None:
    """None if ``path`` is the expected file, else why not (missing, wrong size, wrong hash)."""
    if not path.is_file():
        return f"no {path.name} in the cache folder"
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return (
            f"the cached {path} has {actual_size:,} bytes instead of {size:,} "
            "(an incomplete or corrupt copy)"
        )
    actual = file_sha256(path)
    if actual.lower() != sha256.lower():
        return (
            f"the cached {path} has sha256 {actual}, expected {sha256} "
            "(a corrupt or different file)"
        )
    return None


# --- Resolution --------------------------------------------------------------------------------


def _manual_install_help(target: Path, url: str, sha256: str, size: int | None) -> str:
    size_text = f"{size:,} bytes, " if size is not None else ""
    return (
        f"To install the weights by hand, download\n  {url}\n({size_text}sha256 {sha256}) "
        f"on a machine with internet access and save it as\n  {target}\n"
        f"or save it anywhere and set the environment variable {ENV_WEIGHTS} to its path "
        f"({ENV_CACHE} moves the cache folder)."
    )


def describe_resolution(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    cache_folder: str | os.PathLike[str] | None = None,
    url: str | None = None,
    sha256: str | None = None,
    size: int | None = -1,
) -> WeightsSource:
    """Say which weights :func:`resolve_weights` would use, without downloading anything.

    Arguments are those of :func:`resolve_weights`. Hashes a cached file (memoised).

    Raises:
      FileNotFoundError: ``path`` or ``$NAPARI_MOBILESAM_WEIGHTS`` names a missing file.
      WeightsDownloadError: ``download=False`` and the cache has no valid file.
    """
    if path is not None and str(path) != "":
        return WeightsSource(SOURCE_EXPLICIT, _user_file(path, SOURCE_EXPLICIT), "given by caller")
    env_value = os.environ.get(ENV_WEIGHTS, "").strip()
    if env_value:
        reason = f"set by the environment variable {ENV_WEIGHTS}"
        return WeightsSource(SOURCE_ENV, _user_file(env_value, SOURCE_ENV), reason)
    url = WEIGHTS_URL if url is None else url
    sha256 = WEIGHTS_SHA256 if sha256 is None else sha256
    size = WEIGHTS_SIZE if size == -1 else size
    folder = cache_dir() if cache_folder is None else Path(cache_folder).expanduser()
    target = folder / WEIGHTS_FILENAME
    problem = _cached_file_problem(target, sha256, size)
    if problem is None:
        return WeightsSource(SOURCE_CACHE, target, "cached official file, sha256 verified")
    if not download:
        raise WeightsDownloadError(
            f"MobileSAM weights are not available and downloading is disabled: {problem}.\n"
            + _manual_install_help(target, url, sha256, size),
            url=url,
            sha256=sha256,
            target=target,
        )
    return WeightsSource(SOURCE_DOWNLOAD, target, f"{problem}; will download it", url=url)


def resolve_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progressbar: bool | ProgressHook = True,
    cache_folder: str | os.PathLike[str] | None = None,
    url: str | None = None,
    sha256: str | None = None,
    size: int | None = -1,
) -> Path:
    """Return the path of the weights file to load, downloading the official one if needed.

    Arguments:
      path: an explicit weights file (any hash: fine-tuned files are fine). Empty/None: next step.
      download: allow downloading the official file when the cache has no valid copy.
      progressbar: True for a terminal (tqdm) bar, False for none, or a callable
        ``hook(bytes_done, total_bytes)`` (a GUI progress bar; called from the downloading
        thread, so a Qt widget must forward it to the GUI thread). An exception raised by the
        hook aborts the download (that is how a GUI cancels) and propagates unchanged.
      cache_folder: overrides :func:`cache_dir`.
      url, sha256, size: override :data:`WEIGHTS_URL`, :data:`WEIGHTS_SHA256`,
        :data:`WEIGHTS_SIZE` (``size=None`` skips the size check; -1 means the default).

    Raises:
      FileNotFoundError: ``path`` or ``$NAPARI_MOBILESAM_WEIGHTS`` names a missing file.
      WeightsDownloadError: the download failed or is disabled; nothing partial is left behind.
    """
    source = describe_resolution(
        path, download=download, cache_folder=cache_folder, url=url, sha256=sha256, size=size
    )
    if not source.needs_download:
        logger.debug("MobileSAM weights: %s", source)
        return source.path
    logger.info("MobileSAM weights: %s", source)
    return download_weights(
        cache_folder=source.path.parent,
        url=source.url,
        sha256=WEIGHTS_SHA256 if sha256 is None else sha256,
        size=WEIGHTS_SIZE if size == -1 else size,
        progressbar=progressbar,
    )


# --- Download ----------------------------------------------------------------------------------


class _HookProgressBar:
    """The progress-bar object pooch's ``HTTPDownloader`` drives, forwarding to a hook.

    pooch 1.9 (``downloaders.HTTPDownloader.__call__``) sets ``total`` from Content-Length (0 if
    absent), calls ``update(chunk_size)`` per chunk -- the last chunk is usually shorter, so the
    raw count overshoots -- then ``reset()``, ``update(total)`` and ``close()``. The hook sees
    (0, total) first, then strictly increasing counts capped at ``total``, ending at ``total``.
    """

    def __init__(self, hook: ProgressHook) -> None:
        self._hook = hook
        self._total = 0
        self._count = 0
        self._reported = -1
        self.raised: BaseException | None = None  # what the hook raised, to re-raise unwrapped

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = max(int(value or 0), 0)
        self._emit(0)

    def update(self, n: int) -> None:
        self._count += int(n)
        done = min(self._count, self._total) if self._total > 0 else self._count
        if done > self._reported:
            self._emit(done)

    def reset(self, total: int | None = None) -> None:
        # tqdm semantics: restart the count. The hook never sees it go backwards (see update).
        self._count = 0
        if total is not None:
            self._total = max(int(total), 0)

    def close(self) -> None:
        """Nothing to release; pooch calls it after the last update."""

    def _emit(self, done: int) -> None:
        self._reported = done
        try:
            self._hook(done, self._total)
        except BaseException as exc:
            self.raised = exc
            raise


def _download_failure_reason(exc: BaseException) -> str:
    """A short, user-facing cause for an exception raised by ``pooch.retrieve``."""
    import requests  # a pooch dependency; only needed when classifying a failure

    if isinstance(exc, requests.exceptions.ProxyError):
        return "the proxy could not be reached or refused the connection"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS/SSL connection failed (a proxy or firewall may intercept HTTPS)"
    if isinstance(exc, requests.exceptions.Timeout):
        return "the connection timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return (
            "could not connect (no internet access, a DNS failure, or a firewall blocking the "
            "connection; behind a proxy, set HTTPS_PROXY)"
        )
    if isinstance(exc, requests.exceptions.HTTPError):
        status = getattr(exc.response, "status_code", "error")
        return f"the server answered HTTP {status}"
    if isinstance(
        exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)
    ):
        return "the transfer was interrupted before the whole file arrived"
    if isinstance(exc, requests.exceptions.RequestException):
        return "the request failed"
    if isinstance(exc, ValueError) and "hash" in str(exc).lower():
        return (
            "the downloaded file did not have the expected sha256 (a corrupted transfer, a "
            "proxy/captive-portal page, or a changed file upstream); it was deleted"
        )
    if isinstance(exc, OSError):
        return f"could not write to the cache folder (set {ENV_CACHE} to a writable folder)"
    return "unexpected error"


def download_weights(
    *,
    cache_folder: str | os.PathLike[str] | None = None,
    url: str | None = None,
    sha256: str | None = None,
    size: int | None = -1,
    progressbar: bool | ProgressHook = True,
) -> Path:
    """Download the official ``mobile_sam.pt`` into the cache folder and return its path.

    An existing cached file with the right sha256 is returned without a request. Otherwise the
    file is fetched once (no retries: a failure is reported at once, a GUI can offer "retry").

    Atomicity, verified in pooch 1.9's source (``core.stream_download``): pooch streams into a
    ``tempfile.NamedTemporaryFile`` created *in the cache folder*, checks its hash, and only then
    ``shutil.move``\\ s it onto ``mobile_sam.pt`` (a same-filesystem rename); its
    ``utils.temporary_file`` context manager deletes the temporary file on any exception, hash
    mismatch included. So an interrupted or corrupt download never becomes the cached file.

    Raises:
      WeightsDownloadError: naming the URL, the sha256, the target file and the env variables.
        An exception raised by a progress hook propagates unchanged instead.
    """
    import pooch

    url = WEIGHTS_URL if url is None else url
    sha256 = WEIGHTS_SHA256 if sha256 is None else sha256
    size = WEIGHTS_SIZE if size == -1 else size
    folder = cache_dir() if cache_folder is None else Path(cache_folder).expanduser()
    target = folder / WEIGHTS_FILENAME

    bar: bool | _HookProgressBar
    bar = _HookProgressBar(progressbar) if callable(progressbar) else bool(progressbar)
    # Our own HTTPDownloader (rather than retrieve(progressbar=...)) to set the chunk size and
    # timeouts; pooch uses exactly this class for http(s) URLs anyway.
    downloader = pooch.HTTPDownloader(
        progressbar=bar, chunk_size=DOWNLOAD_CHUNK_SIZE, timeout=DOWNLOAD_TIMEOUT_S
    )
    try:
        fetched = pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=WEIGHTS_FILENAME,
            path=folder,
            downloader=downloader,
        )
    except Exception as exc:
        if isinstance(bar, _HookProgressBar) and bar.raised is exc:
            raise  # the caller's hook asked to stop (e.g. a Cancel button)
        raise WeightsDownloadError(
            f"Could not download the MobileSAM weights: {_download_failure_reason(exc)} "
            f"({type(exc).__name__}: {exc}).\n" + _manual_install_help(target, url, sha256, size),
            url=url,
            sha256=sha256,
            target=target,
        ) from exc
    return Path(fetched)


def load_mobile_sam(
    path: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    download: bool = True,
    progressbar: bool | ProgressHook = True,
) -> Sam:
    """Resolve the weights (see :func:`resolve_weights`) and build the model from them."""
    from napari_mobilesam.model.build import build_mobile_sam

    weights = resolve_weights(path, download=download, progressbar=progressbar)
    return build_mobile_sam(load_weights_state_dict(weights), device=device)
