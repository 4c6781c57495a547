"""The worker's step generator: the lock is held per step only, model errors are re-raised."""

from __future__ import annotations

import threading
from collections.abc import Generator

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Points

from fakes import FakePredictor
from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.predictor_loader import PredictorLoader
from napari_mobilesam.layers.segment import Progress, SegmentResult, capture_request, drive
from napari_mobilesam.widget.worker_steps import ModelError, locked_steps, model_steps


def _two_steps(lock: threading.Lock, seen: list[bool]) -> Generator[Progress, None, str]:
    seen.append(lock.locked())
    yield Progress("one", 0.0)
    seen.append(lock.locked())
    yield Progress("two", 0.0)
    return "done"


def test_lock_is_held_during_steps_and_free_in_between() -> None:
    lock = threading.Lock()
    seen: list[bool] = []
    steps = locked_steps(lock, _two_steps(lock, seen))

    assert next(steps).stage == "one"
    assert not lock.locked()
    assert next(steps).stage == "two"
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert stop.value.value == "done"
    assert seen == [True, True]
    assert not lock.locked()


def test_runtime_errors_become_model_errors_and_release_the_lock() -> None:
    def failing() -> Generator[Progress, None, None]:
        raise RuntimeError("CUDA out of memory")
        yield  # pragma: no cover - makes this a generator

    lock = threading.Lock()
    with pytest.raises(ModelError, match="RuntimeError: CUDA out of memory"):
        next(locked_steps(lock, failing()))
    assert not lock.locked()


def test_model_steps_use_the_loaded_predictor() -> None:
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((20, 30), np.uint8)))
    points = viewer.add_layer(Points([[5, 6]]))
    request = capture_request(viewer, image, points)
    loader = PredictorLoader()
    predictor = FakePredictor()
    loader.set_predictor(predictor, None, "cpu")

    steps = model_steps(loader, None, "cpu", request, EmbeddingCache(), True, ())
    stages = []
    while True:
        try:
            stages.append(next(steps).stage)
        except StopIteration as stop:
            result: SegmentResult = stop.value
            break

    assert stages == ["encoded", "decoded"]  # no "model" stage: it was already loaded
    assert len(result.objects) == 1
    assert len(predictor.encoded) == 1
    assert drive(model_steps(loader, None, "cpu", request, None, True, ())).objects


class _SlowDownloadLoader:
    """A loader whose build reports download progress in 10 steps."""

    def __init__(self) -> None:
        import threading

        self.calls: list[tuple[int, int]] = []
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def get(self, weights, device, progress=True):
        import time as _time

        try:
            for done in range(0, 11):
                progress(done * 100, 1000)
                self.calls.append((done * 100, 1000))
                _time.sleep(0.02)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.finished.set()
        return object()


def test_load_steps_reports_download_progress() -> None:
    from napari_mobilesam.widget.worker_steps import load_steps

    loader = _SlowDownloadLoader()
    fractions = [p.fraction for p in load_steps(loader, None, "cpu", poll_s=0.01)]
    assert fractions  # progress was reported while the build ran
    assert list(load_steps(_Done(), None, "cpu")) == []  # nothing to report without a download
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] <= 1.0
    assert loader.calls[-1] == (1000, 1000)


def test_cancelling_load_steps_stops_the_download() -> None:
    from napari_mobilesam.widget.worker_steps import DownloadCancelled, load_steps

    loader = _SlowDownloadLoader()
    steps = load_steps(loader, None, "cpu", poll_s=0.01)
    next(steps)
    steps.close()  # what a worker's quit does to the generator
    assert loader.finished.wait(2.0)
    assert isinstance(loader.error, DownloadCancelled) and len(loader.calls) < 11


class _Done:
    def get(self, weights, device, progress=True):
        return object()
