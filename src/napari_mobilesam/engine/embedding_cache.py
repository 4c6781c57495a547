"""A least-recently-used cache of image embeddings, bounded by bytes.

Encoding a plane is the slow step (seconds on a CPU); decoding a prompt takes milliseconds. The
cache keeps the embeddings of planes seen recently so that going back to a slice, or adding a
prompt, does not encode again. One MobileSAM embedding is 256 x 64 x 64 float32 = 4 MiB, so the
default budget of 256 MiB holds 64 planes.

Keys are ``(layer id, plane key, normalisation key)``: the same plane shown with other contrast
limits gives the model other pixels and so another embedding. The cache knows nothing of napari or
torch; values only need ``nbytes`` (numpy) or ``element_size()``/``nelement()`` (torch), or the
caller passes their size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from napari_mobilesam.engine.parameter_checks import checked_whole

MIB = 1024 * 1024
DEFAULT_BUDGET_BYTES = 256 * MIB
EMBEDDING_BYTES = 256 * 64 * 64 * 4

CacheKey = tuple[str, Hashable, Hashable]


def size_in_bytes(value: Any) -> int:
    """Bytes held by an array-like value, or by a tuple/list of them (other items count 0)."""
    if isinstance(value, (tuple, list)):
        return sum(size_in_bytes(item) for item in value)
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return int(value.element_size()) * int(value.nelement())
    return 0


class EmbeddingCache:
    """LRU mapping ``(layer id, plane key, normalisation key) -> embedding``, bounded by bytes.

    Args:
        max_bytes: memory budget; the least recently used entries are evicted beyond it. An
            entry larger than the whole budget is not stored.
    """

    def __init__(self, max_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.max_bytes = checked_whole("max_bytes", max_bytes, 0, 2**62)
        self._disk_folder: Any = None
        self._disk: Any = None
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        # The worker thread reads and fills the cache while the UI thread may invalidate it.
        self._lock = threading.RLock()
        self._epoch = 0

    @property
    def disk_folder(self) -> Any:
        """Where embeddings also go on disk (None: memory only); see segment.ensure_embedding."""
        return self._disk_folder

    @disk_folder.setter
    def disk_folder(self, folder: Any) -> None:
        # A new setting starts a new store, so switching the disk cache off and on again
        # retries a folder that failed before.
        self._disk_folder = folder
        self._disk = None

    def disk_store(self, model_id: str) -> Any:
        """The :class:`~.disk_cache.DiskEmbeddingCache` of :attr:`disk_folder` for one model
        (None without a folder). The same store is returned on every call, so a folder that
        cannot be written warns once, not on every plane."""
        if self._disk_folder is None:
            return None
        from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache

        with self._lock:
            if self._disk is None or self._disk.model_id != model_id:
                self._disk = DiskEmbeddingCache(self._disk_folder, model_id)
            return self._disk

    @property
    def epoch(self) -> int:
        """Counts invalidations: read it before encoding and pass it to :meth:`put`, so an
        embedding whose layer, contrast or model changed meanwhile is never stored."""
        return self._epoch

    @property
    def max_entries(self) -> int:
        """How many MobileSAM embeddings (4 MiB each) fit in the budget."""
        return self.max_bytes // EMBEDDING_BYTES

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[CacheKey]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def get(self, key: CacheKey) -> Any | None:
        """The cached value (marked most recently used) or ``None``; counts a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return entry[0]

    def put(
        self, key: CacheKey, value: Any, nbytes: int | None = None, epoch: int | None = None
    ) -> None:
        """Store ``value`` under ``key``, evicting least recently used entries to stay in budget.

        With ``epoch`` (the :attr:`epoch` read before computing ``value``), nothing is stored if
        the cache was invalidated or cleared since: the value may be stale.
        """
        size = size_in_bytes(value) if nbytes is None else int(nbytes)
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                return
            self._drop(key)
            if size > self.max_bytes:
                return
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def invalidate_layer(self, layer_id: str) -> int:
        """Forget every entry of one layer (its data changed); returns how many were dropped."""
        return self._drop_where(lambda key: key[0] == layer_id)

    def retain_normalisation(self, layer_id: str, normalisation: Hashable) -> int:
        """Forget a layer's entries made with another normalisation (contrast limits changed)."""
        return self._drop_where(lambda key: key[0] == layer_id and key[2] != normalisation)

    def clear(self) -> None:
        """Forget everything (the hit and miss counters are kept)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._epoch += 1

    def _drop(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]

    def _drop_where(self, predicate: Any) -> int:
        with self._lock:
            self._epoch += 1
            doomed = [key for key in self._entries if predicate(key)]
            for key in doomed:
                self._drop(key)
            return len(doomed)
