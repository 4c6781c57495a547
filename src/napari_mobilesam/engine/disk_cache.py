"""An on-disk store of image embeddings, so reopening the same data does not encode again.

An entry's key is a hash of the exact uint8 RGB plane the encoder sees plus a fingerprint of the
model's weights. The plane's pixels already carry its content and its normalisation (contrast
limits), so the same key can never name two different embeddings, whichever file, plane or
session it came from. Entries are ``.npy`` files (float32, 4 MiB each) written atomically
(:mod:`~napari_mobilesam.engine.atomic_files`), so a crash never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from napari_mobilesam.engine.atomic_files import sweep_temporaries, write_atomically

EMBEDDING_SHAPE = (1, 256, 64, 64)


class DiskCacheWarning(UserWarning):
    """The disk cache cannot store embeddings; work goes on with the memory cache only."""


def model_fingerprint(model) -> str:
    """A short hash of a torch model's state dict (names, shapes and values); memoised."""
    known = getattr(model, "_napari_mobilesam_fingerprint", None)
    if known is not None:
        return known
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    model._napari_mobilesam_fingerprint = digest.hexdigest()
    return model._napari_mobilesam_fingerprint


def default_cache_folder() -> Path:
    """``embeddings/`` in the package's cache folder (:func:`~.weights.cache_dir`:
    ``$NAPARI_MOBILESAM_CACHE``, ``~`` expanded, or the platform's user cache folder)."""
    from napari_mobilesam.engine.weights import cache_dir

    return cache_dir() / "embeddings"


class DiskEmbeddingCache:
    """Embeddings stored as files named by a hash of (model, model input).

    Arguments:
      folder: where the files go (created when needed).
      model_id: fingerprint of the weights, e.g. :func:`model_fingerprint`.
    """

    def __init__(self, folder: str | os.PathLike[str], model_id: str) -> None:
        self.folder = Path(folder)
        self.model_id = model_id
        self.hits = 0
        self.misses = 0
        # Why storing failed (folder is a file, read-only, disk full), or None: the cache is
        # optional, so after one failure it stops writing instead of failing every encode.
        self.write_error: str | None = None

    def key(self, model_input: np.ndarray) -> str:
        """Key of the embedding of one (H, W, 3) uint8 plane."""
        digest = hashlib.blake2b(digest_size=20)
        digest.update(self.model_id.encode())
        digest.update(str(model_input.shape).encode())
        digest.update(np.ascontiguousarray(model_input).tobytes())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The stored (1, 256, 64, 64) float32 embedding, or None (unreadable = absent)."""
        path = self._path(key)
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # EOFError: an empty file
            self.misses += 1
            return None
        if value.shape != EMBEDDING_SHAPE or value.dtype != np.float32:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, embedding: np.ndarray) -> bool:
        """Store an embedding atomically (temporary file, then rename); True if it was stored.

        A folder that cannot be written (it is a file, read-only, or the disk is full) gives one
        :class:`DiskCacheWarning` and :attr:`write_error`; later calls store nothing, so the
        caller goes on with the embedding it already has.
        """
        embedding = np.asarray(embedding, dtype=np.float32)
        if embedding.shape != EMBEDDING_SHAPE:
            raise ValueError(f"embedding must be {EMBEDDING_SHAPE}, got {embedding.shape}.")
        if self.write_error is not None:
            return False
        try:
            self._write(self._path(key), embedding)
        except OSError as exc:
            self.write_error = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"Embeddings cannot be stored in the disk cache {self.folder} "
                f"({self.write_error}); going on without it (embeddings stay in memory). "
                "Free some space or choose a writable folder with $NAPARI_MOBILESAM_CACHE.",
                DiskCacheWarning,
                stacklevel=2,
            )
            return False
        return True

    @staticmethod
    def _write(path: Path, embedding: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, embedding, allow_pickle=False)

        write_atomically(path, write)

    def sweep(self, older_than: float | None = None) -> int:
        """Remove the temporaries a killed writer left in the cache (see
        :func:`~napari_mobilesam.engine.atomic_files.sweep_temporaries`); how many."""
        try:
            folders = (
                [p for p in self.folder.iterdir() if p.is_dir()] if self.folder.is_dir() else []
            )
        except OSError:
            return 0
        return sum(sweep_temporaries(f, older_than=older_than) for f in folders)

    def __len__(self) -> int:
        try:
            return sum(1 for _ in self.folder.glob("*/*.npy")) if self.folder.is_dir() else 0
        except OSError:  # an unreadable folder holds nothing usable
            return 0
