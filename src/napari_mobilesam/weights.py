"""Find, download, verify and read the MobileSAM weights (``mobile_sam.pt``).

Resolution order (first match wins, see :func:`describe_resolution`):

1. an explicit path passed by the caller;
2. the environment variable ``NAPARI_MOBILESAM_WEIGHTS``;
3. ``mobile_sam.pt`` in the user cache folder (``pooch.os_cache("napari-mobilesam")``, or the
   folder named by ``NAPARI_MOBILESAM_CACHE``), used only when its sha256 is the official one;
4. a download of the official file into that cache folder (sha256-checked before it is kept).

A file named explicitly (1 or 2) is accepted whatever its hash, so fine-tuned weights work; its
layout is checked when it is loaded. :func:`load_weights_state_dict` reads any candidate file
without executing pickled code and explains what a wrong file is (another SAM, SAM 2, an image,
an HTML page, an empty or truncated download...).

This module imports neither napari nor Qt, and imports torch only inside the functions that read
checkpoints, so the widget can describe the weights before torch is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .modeling import Sam

logger = logging.getLogger(__name__)

# --- The official file. Module constants so tests (and mirrors) can patch them. ---------------
WEIGHTS_FILENAME = "mobile_sam.pt"
WEIGHTS_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
WEIGHTS_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
WEIGHTS_SIZE = 40_728_226  # bytes; a cheap first check before hashing a cached file
WEIGHTS_LICENSE = "Apache-2.0"

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
    """The folder that holds the downloaded ``mobile_sam.pt``.

    ``NAPARI_MOBILESAM_CACHE`` if set, else the platform's user cache folder for
    ``napari-mobilesam`` (``~/.cache/napari-mobilesam`` on Linux, ``~/Library/Caches/...`` on
    macOS, ``%LOCALAPPDATA%\\napari-mobilesam\\Cache`` on Windows).
    """
    override = os.environ.get(ENV_CACHE, "").strip()
    if override:
        return Path(override).expanduser()
    import pooch  # light, but only needed here and for downloads

    return Path(pooch.os_cache(CACHE_APP_NAME)).expanduser()


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


# --- Recognising checkpoints -------------------------------------------------------------------

_NEEDED = (
    f"napari-mobilesam needs the MobileSAM vit_t file {WEIGHTS_FILENAME} "
    f"({WEIGHTS_URL}) or a fine-tuned file with the same layout"
)

# Keys under which training scripts commonly nest the model's state dict.
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module", "net", "weights")

_SAM_VIT_SIZES = {768: "ViT-B", 1024: "ViT-L", 1280: "ViT-H"}
_SAM_VIT_DEPTHS = {12: "ViT-B", 24: "ViT-L", 32: "ViT-H"}

# The checkpoint kinds :func:`_classify` returns.
_MOBILESAM = "mobilesam"
_UNKNOWN = "unknown"
_KNOWN_FOREIGN = ("sam2", "hq-sam", "sam-vit", "encoder-only")


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _keys_with(keys: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [k for k in keys if k.startswith(prefixes)]


def _examples(keys: list[str], limit: int = 3) -> str:
    """A few keys, shortened to their first three dotted parts, for a message."""
    seen: list[str] = []
    for key in keys:
        parts = key.split(".")
        short = ".".join(parts[:3]) + ("..." if len(parts) > 3 else "")
        if short not in seen:
            seen.append(short)
        if len(seen) == limit:
            break
    return ", ".join(seen)


def _sam_vit_size(state_dict: Mapping[str, Any], keys: list[str]) -> str:
    """ViT-B/L/H from the embedding width (pos_embed, patch_embed) or the number of blocks."""
    widths = (("image_encoder.pos_embed", -1), ("image_encoder.patch_embed.proj.weight", 0))
    for key, axis in widths:
        shape = getattr(state_dict.get(key), "shape", None)
        if shape is not None and len(shape) > 0 and int(shape[axis]) in _SAM_VIT_SIZES:
            return _SAM_VIT_SIZES[int(shape[axis])]
    block = re.compile(r"image_encoder\.blocks\.(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := block.match(k))}
    if indices and max(indices) + 1 in _SAM_VIT_DEPTHS:
        return _SAM_VIT_DEPTHS[max(indices) + 1]
    return "ViT-B/L/H"


def _classify(state_dict: Mapping[Any, Any], depth: int = 0) -> tuple[str, str]:
    """(kind, description) of a loaded checkpoint; ``kind == "mobilesam"`` for our layout."""
    if len(state_dict) == 0:
        return "empty", "an empty dict (no weights at all)"
    keys = [str(k) for k in state_dict]

    sam2 = _keys_with(
        keys,
        (
            "image_encoder.trunk.",
            "memory_attention.",
            "memory_encoder.",
            "sam_mask_decoder.",
            "sam_prompt_encoder.",
            "obj_ptr_proj.",
        ),
    )
    if sam2:
        return "sam2", f"a SAM 2 / SAM 2.1 (Hiera) checkpoint ({_examples(sam2)})"
    hq = _keys_with(
        keys,
        (
            "mask_decoder.hf_",
            "mask_decoder.compress_vit_feat",
            "mask_decoder.embedding_encoder",
            "mask_decoder.embedding_maskfeature",
        ),
    )
    if hq:
        return "hq-sam", f"an HQ-SAM checkpoint (extra decoder keys {_examples(hq)})"
    vit = _keys_with(
        keys,
        ("image_encoder.blocks.", "image_encoder.pos_embed", "image_encoder.patch_embed.proj."),
    )
    if vit:
        size = _sam_vit_size(state_dict, keys)
        return "sam-vit", f"a SAM {size} checkpoint ({_examples(vit)})"
    tiny = _keys_with(keys, ("image_encoder.patch_embed.seq.", "image_encoder.layers."))
    if tiny:
        return _MOBILESAM, "a MobileSAM (vit_t, TinyViT image encoder) checkpoint"
    bare = _keys_with(keys, ("patch_embed.seq.", "layers.0."))
    if bare and not _keys_with(keys, ("mask_decoder.", "prompt_encoder.")):
        return "encoder-only", (
            "a TinyViT image-encoder-only checkpoint without the prompt encoder and mask decoder "
            f"({_examples(bare)}; e.g. from MobileSAM's distillation training)"
        )
    if depth < 2:
        for wrap in _WRAPPER_KEYS:
            inner = state_dict.get(wrap)
            if isinstance(inner, Mapping):
                inner_kind, inner_text = _classify(inner, depth + 1)
                if inner_kind in _KNOWN_FOREIGN:  # e.g. SAM 2's own {"model": {...}} format
                    return inner_kind, f"{inner_text}, stored under '{wrap}'"
                others = [k for k in keys if k != wrap]
                also = f" (other entries: {', '.join(others[:5])})" if others else ""
                return "wrapper", (
                    f"a training checkpoint whose weights sit under '{wrap}'{also}, holding "
                    f"{inner_text}"
                )
    n_tensors = sum(hasattr(v, "shape") for v in state_dict.values())
    if n_tensors == 0:
        entries = _count(len(keys), "entry", "entries")
        return "no-tensors", f"a dict of {entries} without any tensor ({_examples(keys)})"
    return _UNKNOWN, (
        f"a dict of {_count(len(keys), 'entry', 'entries')} ({_count(n_tensors, 'tensor')}) "
        "that matches no known model "
        f"(first keys: {_examples(keys)})"
    )


def identify_checkpoint(state_dict: Mapping[Any, Any]) -> str:
    """Describe a loaded checkpoint in words, e.g. "a SAM ViT-B checkpoint (image_encoder...)".

    Recognises MobileSAM, SAM ViT-B/L/H, HQ-SAM, SAM 2, a TinyViT encoder alone, training
    wrappers (``{"model": ...}``), empty dicts, and dicts without tensors. Needs no torch.
    """
    return _classify(state_dict)[1]


def layout_hint(state_dict: Mapping[Any, Any]) -> str:
    """A sentence for error messages: " It looks like <what>." unless it is MobileSAM ("")."""
    kind, text = _classify(state_dict)
    return "" if kind == _MOBILESAM else f" It looks like {text}."


def unwrap_state_dict(checkpoint: Mapping[Any, Any]) -> dict[Any, Any]:
    """The MobileSAM state dict inside common wrappers, else ``checkpoint`` unchanged (a dict).

    Unwraps ``{"model"|"state_dict"|...: sd, ...}`` (training checkpoints) and strips a
    ``module.`` prefix (``DataParallel``), but only when the result has the MobileSAM layout, so a
    wrapper around something else is left for the error message to explain.
    """
    candidates: list[Mapping[Any, Any]] = [checkpoint]
    for wrap in _WRAPPER_KEYS:
        inner = checkpoint.get(wrap)
        if isinstance(inner, Mapping):
            candidates.append(inner)
    for candidate in candidates:
        if _classify(candidate, depth=2)[0] == _MOBILESAM:
            return dict(candidate)
        keys = list(candidate)
        if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
            stripped = {k[len("module.") :]: v for k, v in candidate.items()}
            if _classify(stripped, depth=2)[0] == _MOBILESAM:
                return stripped
    return dict(checkpoint)


# --- Recognising files -------------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
    (b"BZh", "a bzip2 archive (unpack it first)"),
    (b"\xfd7zXZ\x00", "an xz archive (unpack it first)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (unpack it first)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. Keras weights)"),
    (b"version https://git-lfs", "a Git LFS pointer, not the weights (clone with git-lfs)"),
)


def identify_file(path: str | os.PathLike[str]) -> str | None:
    """Describe a file that is certainly not a readable PyTorch checkpoint, else None.

    Looks only at the size and the first bytes (and, for zip files, the directory), so it is
    cheap and never unpickles anything. None means "may be a checkpoint: let torch try".
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes: an interrupted download or copy)"
    with open(path, "rb") as fh:
        head = fh.read(1024)
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(b"PK"):
        # torch.save's format is a zip whose directory sits at the end: a cut-off copy has none.
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return (
                f"a truncated (incomplete) checkpoint: {size:,} bytes with no zip directory at "
                f"the end (the official {WEIGHTS_FILENAME} is {WEIGHTS_SIZE:,} bytes)"
            )
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return f"a zip archive that is not a PyTorch checkpoint (contains {names[:3]})"
        return None
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "a safetensors file (napari-mobilesam reads PyTorch .pt files)"
    if path.suffix.lower() == ".onnx":
        return "an ONNX model (napari-mobilesam reads the PyTorch .pt weights)"
    if head.startswith(b"\x80"):
        return None  # a pickle: the legacy torch.save format, or a plain pickle
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")) or b"<html" in lowered:
        return "an HTML page (a web page was saved instead of the file; use the raw download link)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return f"a text file (starting with {first!r})"
    return None


def load_weights_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a weights file into a MobileSAM state dict, explaining any wrong file.

    Never executes pickled code (``torch.load(weights_only=True)`` via
    :func:`napari_mobilesam.build.load_checkpoint`). Foreign files (images, HTML, archives,
    empty or truncated files) are recognised from their first bytes before torch reads them.
    Training wrappers and ``module.`` prefixes are unwrapped. The strict key/shape check is
    :func:`napari_mobilesam.build.check_state_dict` (``build_mobile_sam`` runs it).

    Returns:
      ``{key: tensor}`` with the MobileSAM layout (or an unrecognised dict, for the strict check
      to report key by key).

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: the file is unreadable or another model; the message says what it is.
    """
    from .build import CheckpointError, load_checkpoint  # torch is imported here, not earlier

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MobileSAM checkpoint not found: {path}")
    what = identify_file(path)
    if what is not None:
        raise CheckpointError(f"{path} is {what}, not a PyTorch checkpoint; {_NEEDED}.")
    state_dict = unwrap_state_dict(load_checkpoint(path))
    kind, text = _classify(state_dict)
    if kind not in (_MOBILESAM, _UNKNOWN):
        raise CheckpointError(f"{path} looks like {text}; {_NEEDED}.")
    return state_dict


def load_mobile_sam(
    path: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    download: bool = True,
    progressbar: bool | ProgressHook = True,
) -> Sam:
    """Resolve the weights (see :func:`resolve_weights`) and build the model from them."""
    from .build import build_mobile_sam

    weights = resolve_weights(path, download=download, progressbar=progressbar)
    return build_mobile_sam(load_weights_state_dict(weights), device=device)


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_mobilesam.weights [--no-download] [PATH]``: print (and fetch) weights."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m napari_mobilesam.weights",
        description="Show which MobileSAM weights would be used; download them if needed.",
    )
    parser.add_argument("path", nargs="?", default=None, help="an explicit weights file")
    parser.add_argument("--no-download", action="store_true", help="only report, never download")
    args = parser.parse_args(argv)
    try:
        source = describe_resolution(args.path, download=not args.no_download)
        print(source)
        if source.needs_download and not args.no_download:
            print(resolve_weights(args.path, progressbar=True))
    except (FileNotFoundError, WeightsDownloadError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
