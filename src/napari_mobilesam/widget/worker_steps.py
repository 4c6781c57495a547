"""The model work of one widget run, as a generator of steps that a thread worker drives.

No Qt here: the widget hands :func:`locked_steps` to a napari thread worker, scripts can
``drive`` it in their own thread.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.predictor_loader import PredictorLoader
from napari_mobilesam.layers.segment import (
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
    each_point: bool = False,
) -> Generator[Progress, None, SegmentResult]:
    """Load the model if needed (downloading the weights, with progress, if it comes to that),
    then :func:`~napari_mobilesam.layers.segment.run_request`."""

    def body(predictor: Any) -> Generator[Progress, None, SegmentResult]:
        return run_request(request, predictor, cache, multimask_output, previous, each_point)

    return (yield from loaded_steps(loader, weights, device, cache, body))


def loaded_steps(
    loader: PredictorLoader,
    weights: Path | None,
    device: str,
    cache: EmbeddingCache,
    body: Callable[[Any], Generator[Any, None, Any]],
) -> Generator[Any, None, Any]:
    """Load the model if needed, then run ``body(predictor)``; after a GPU failure, warn and run
    it again on the CPU (the 2D run and the 3D runs share this)."""
    if not loader.is_loaded(weights, device):
        start = time.perf_counter()
        yield from load_steps(loader, weights, device)
        yield Progress("model", time.perf_counter() - start)
    predictor = loader.get(weights, device)
    try:
        result = yield from body(predictor)
    except (RuntimeError, NotImplementedError) as exc:
        # GPUs fail in ways the CPU does not (out of memory, driver errors, operators MPS
        # lacks): finish this run on the CPU rather than leave the user with a traceback.
        failed = loader.device
        if failed in (None, "cpu"):
            raise
        warnings.warn(
            f"The model failed on {failed} ({type(exc).__name__}: {exc}); using the CPU "
            "instead. Pick the device again to retry it.",
            DeviceFallbackWarning,
            stacklevel=2,
        )
        predictor = loader.fall_back_to_cpu(weights, device)
        cache.clear()  # embeddings from the failed device are not trusted
        result = yield from body(predictor)
    return result


class DeviceFallbackWarning(UserWarning):
    """The model failed on a GPU (CUDA or MPS) and the run was repeated on the CPU."""


class DownloadCancelled(Exception):
    """Raised inside the download's progress hook to stop it (the run was cancelled)."""


def load_steps(
    loader: PredictorLoader, weights: Path | None, device: str, poll_s: float = 0.1
) -> Generator[Progress, None, None]:
    """Build the predictor in a helper thread, yielding download progress meanwhile.

    A weights download is one blocking call; running it beside this generator lets the worker
    report progress and lets a cancelled run stop the download (the hook raises).
    """
    state: dict[str, object] = {"done": 0, "total": 0, "error": None}
    cancelled = threading.Event()

    def hook(done: int, total: int) -> None:
        if cancelled.is_set():
            raise DownloadCancelled("download cancelled")
        state["done"], state["total"] = done, total

    def build() -> None:
        try:
            loader.get(weights, device, progress=hook)
        except BaseException as exc:  # handed to the generator, which re-raises it
            state["error"] = exc

    thread = threading.Thread(target=build, name="napari-mobilesam-load", daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        while thread.is_alive():
            thread.join(poll_s)
            total = int(state["total"])  # type: ignore[call-overload]
            if total:
                fraction = int(state["done"]) / total  # type: ignore[call-overload]
                yield Progress("download", time.perf_counter() - start, fraction=fraction)
    finally:
        cancelled.set()  # a worker quitting here closes the generator: stop the download too
    if state["error"] is not None:
        raise state["error"]  # type: ignore[misc]


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
