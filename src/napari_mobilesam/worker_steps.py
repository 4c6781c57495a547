"""The model work of one widget run, as a generator of steps that a thread worker drives.

No Qt here: the widget hands :func:`locked_steps` to a napari thread worker, scripts can
``drive`` it in their own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from pathlib import Path

from napari_mobilesam.embedding_cache import EmbeddingCache
from napari_mobilesam.predictor_loader import PredictorLoader
from napari_mobilesam.segment import (
    Progress,
    SegmentedObject,
    SegmentRequest,
    SegmentResult,
    run_request,
)


class ModelError(Exception):
    """A failure inside model code, re-raised so that the worker reports it.

    superqt's worker treats a ``RuntimeError`` escaping a generator as "the worker was deleted"
    and only warns; torch reports most failures (out of memory, device errors) as
    ``RuntimeError``, so they are wrapped in this type instead.
    """


def model_steps(
    loader: PredictorLoader,
    weights: Path | None,
    device: str,
    request: SegmentRequest,
    cache: EmbeddingCache,
    multimask_output: bool,
    previous: tuple[SegmentedObject, ...],
) -> Generator[Progress, None, SegmentResult]:
    """Load the model if needed, then :func:`~napari_mobilesam.segment.run_request`."""
    if not loader.is_loaded(weights, device):
        start = time.perf_counter()
        loader.get(weights, device)
        yield Progress("model", time.perf_counter() - start)
    predictor = loader.get(weights, device)
    result = yield from run_request(request, predictor, cache, multimask_output, previous)
    return result


def locked_steps(
    lock: threading.Lock, steps: Generator[Progress, None, SegmentResult]
) -> Generator[Progress, None, SegmentResult]:
    """Run each step of ``steps`` holding ``lock``; the lock is free while suspended.

    A worker stopped at a yield is never resumed, so a lock held across yields could stay taken
    for good. Holding it per step is enough: whoever takes the predictor in between (a scripting
    call) also bumps the generation, so this worker's result is dropped.
    """
    while True:
        with lock:
            try:
                item = next(steps)
            except StopIteration as stop:
                return stop.value
            except RuntimeError as exc:
                raise ModelError(f"{type(exc).__name__}: {exc}") from exc
        yield item
