"""The embedding cache: LRU order, byte budget, hit/miss counts, invalidation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam.engine.embedding_cache import (
    EMBEDDING_BYTES,
    MIB,
    EmbeddingCache,
    size_in_bytes,
)


def _embedding(fill: float = 0.0) -> np.ndarray:
    return np.full((1, 256, 64, 64), fill, dtype=np.float32)


def _key(layer: str, z: int, limits: tuple[float, float] = (0.0, 255.0)):
    return (layer, (layer, (z, None, None), (1, 2)), ("contrast", *limits, False))


def test_default_budget_holds_64_embeddings() -> None:
    assert EMBEDDING_BYTES == 4 * MIB
    assert EmbeddingCache().max_entries == 64
    assert EmbeddingCache(max_bytes=10 * MIB).max_entries == 2


def test_sizes_of_arrays_tensors_and_tuples() -> None:
    assert size_in_bytes(_embedding()) == EMBEDDING_BYTES
    assert size_in_bytes((_embedding(), (480, 640))) == EMBEDDING_BYTES
    torch = pytest.importorskip("torch")
    assert size_in_bytes(torch.zeros(1, 256, 64, 64)) == EMBEDDING_BYTES


def test_hits_misses_and_lru_eviction_by_bytes() -> None:
    cache = EmbeddingCache(max_bytes=3 * EMBEDDING_BYTES)
    for z in range(3):
        cache.put(_key("a", z), _embedding(z))
    assert cache.get(_key("a", 0))[0, 0, 0, 0] == 0  # touch 0: now 1 is the oldest
    assert cache.get(_key("a", 9)) is None
    assert (cache.hits, cache.misses) == (1, 1)

    cache.put(_key("a", 3), _embedding(3))

    assert len(cache) == 3
    assert cache.nbytes == 3 * EMBEDDING_BYTES
    assert _key("a", 1) not in cache
    assert cache.keys() == [_key("a", 2), _key("a", 0), _key("a", 3)]


def test_replacing_a_key_does_not_double_count() -> None:
    cache = EmbeddingCache(max_bytes=2 * EMBEDDING_BYTES)
    cache.put(_key("a", 0), _embedding(1))
    cache.put(_key("a", 0), _embedding(2))
    assert len(cache) == 1
    assert cache.nbytes == EMBEDDING_BYTES
    assert cache.get(_key("a", 0))[0, 0, 0, 0] == 2


def test_entry_larger_than_budget_is_not_kept() -> None:
    cache = EmbeddingCache(max_bytes=EMBEDDING_BYTES - 1)
    cache.put(_key("a", 0), _embedding())
    assert len(cache) == 0 and cache.nbytes == 0


def test_invalidate_layer_and_other_contrast_limits() -> None:
    cache = EmbeddingCache()
    cache.put(_key("a", 0), _embedding(), nbytes=10)
    cache.put(_key("a", 1, (0, 100)), _embedding(), nbytes=10)
    cache.put(_key("b", 0), _embedding(), nbytes=10)

    dropped = cache.retain_normalisation("a", ("contrast", 0.0, 100.0, False))
    assert dropped == 1
    assert cache.keys() == [_key("a", 1, (0, 100)), _key("b", 0)]

    assert cache.invalidate_layer("a") == 1
    assert cache.keys() == [_key("b", 0)]
    assert cache.nbytes == 10

    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_negative_budget_is_an_error() -> None:
    with pytest.raises(ValueError):
        EmbeddingCache(max_bytes=-1)
