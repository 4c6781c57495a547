"""The widget's 3D work: propagate the previewed objects through the stack, precompute planes.

Both run in napari thread workers as generators (one plane per step), share the widget's model
lock, embedding cache and weights, and touch layers only in the workers' callbacks. Precompute
gives way to the interactive path: an interactive run pauses it, and it resumes afterwards
where it stopped (planes already cached are skipped). Progress and outcomes go to the widget's
status line; an error is reported there and once as a notification, never re-raised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_warning

from napari_mobilesam.engine.propagation import drive
from napari_mobilesam.layers.labels_writer import LabelsError, write_objects
from napari_mobilesam.layers.plane import PlaneError, spatial_shape
from napari_mobilesam.layers.segment import SegmentRequest
from napari_mobilesam.layers.stack_layers import (
    PlaneMasks,
    default_walk_axis,
    precompute_steps,
    propagation_steps,
    stop_planes,
    walk_axes,
)
from napari_mobilesam.widget.stack_panel import StackPanel
from napari_mobilesam.widget.status_text import propagation_summary
from napari_mobilesam.widget.worker_steps import loaded_steps, locked_steps

if TYPE_CHECKING:
    import threading

    import napari
    from napari.layers import Image, Labels, Points

    from napari_mobilesam.engine.embedding_cache import EmbeddingCache
    from napari_mobilesam.engine.predictor_loader import PredictorLoader
    from napari_mobilesam.layers.segment import SegmentedObject


class StackHost(Protocol):
    """What the runner uses of the dock widget (``MobileSAMWidget`` provides it).

    Spelled out here so that the runner does not import the widget module that owns it.
    """

    viewer: napari.viewer.Viewer
    loader: PredictorLoader
    cache: EmbeddingCache
    weights: Any
    device: str
    protect: bool
    points_layer: Points | None
    objects: list[SegmentedObject]
    _model_lock: threading.Lock
    _generation: int
    _closed: bool

    def segment(self) -> list[SegmentedObject]: ...
    def _capture_request(self) -> SegmentRequest: ...
    def _require_image(self) -> Image: ...
    def _objects_are_current(self) -> bool: ...
    def _target_labels(self, image: Image) -> Labels: ...
    def _finish_commit(self, message: str) -> None: ...
    def _set_status(self, text: str, outcome: bool = False) -> None: ...
    def _watch_window(self) -> None: ...
    def _show_download(self, fraction: float | None) -> None: ...
    def _on_warned(self, show_warning_args: tuple) -> None: ...
    def _on_progress(self, generation: int, progress: Any) -> None: ...


KEY_PROPAGATE = "Shift-P"


@dataclasses.dataclass
class _Job:
    """What a 3D run needs, captured on the main thread."""

    request: SegmentRequest
    axis: int
    n_planes: int


class StackRunner:
    """Owns the 3D panel and its worker for one dock widget (a :class:`StackHost`)."""

    def __init__(self, widget: StackHost, expanded: bool = False) -> None:
        self.widget = widget
        self.panel = StackPanel(expanded=expanded)
        self.worker: GeneratorWorker | None = None
        self.kind: str | None = None  # "propagate" or "precompute" while a worker runs
        self._resume_precompute = False
        self._cancelled = False
        self._bar: Any = None
        self.panel._propagate_button.changed.connect(self.start_propagation)
        self.panel._precompute_button.changed.connect(self.start_precompute)
        self.panel._disk_check.changed.connect(self.set_disk_cache)

    def set_disk_cache(self, enabled: bool) -> None:
        """Also keep embeddings on disk (the user cache folder), or memory only."""
        from napari_mobilesam.engine.disk_cache import default_cache_folder

        self.widget.cache.disk_folder = default_cache_folder() if enabled else None

    # ------------------------------------------------------------------ capture
    def refresh_axes(self) -> None:
        """Offer the current plane's non-displayed axes in the axis box."""
        try:
            plane = self.widget._capture_request().plane
        except (PlaneError, ValueError):
            return
        labels = self.widget.viewer.dims.axis_labels
        offset = len(labels) - len(plane.slice_index)
        axes = [(f"{labels[axis + offset]} (axis {axis})", axis) for axis in walk_axes(plane)]
        self.panel.set_axis_choices(axes)

    def _job(self) -> _Job:
        widget = self.widget
        request = widget._capture_request()
        axis = self.panel.walk_axis
        axis = default_walk_axis(request.plane) if axis is None else axis
        if request.plane.slice_index[axis] is None:
            raise ValueError("The walk axis is displayed now; choose another axis.")
        n_planes = int(spatial_shape(widget._require_image())[axis])
        return _Job(request, axis, n_planes)

    def _steps(self, body: Any) -> Generator[Any, None, Any]:
        """Load the model if needed (download progress included), then run ``body``; a GPU
        failure falls back to the CPU as in the 2D path."""
        widget = self.widget
        return (
            yield from loaded_steps(
                widget.loader, widget.weights, widget.device, widget.cache, body
            )
        )

    def _propagation_body(self, job: _Job, objects: list, settings: Any):
        def body(predictor: Any):
            return propagation_steps(
                job.request, objects, job.axis, job.n_planes, predictor, self.widget.cache,
                settings,
            )  # fmt: skip

        return body

    def _settings(self, job: _Job) -> Any:
        widget = self.widget
        start = job.request.plane.slice_index[job.axis]
        settings = self.panel.settings(start, job.n_planes)
        markers = stop_planes(
            widget.points_layer, widget._require_image(), job.request.plane, job.axis,
            widget.viewer,
        )  # fmt: skip
        return dataclasses.replace(settings, stop_planes=markers)

    def _objects(self) -> list:
        objects = self.widget.objects if self.widget._objects_are_current() else []
        if not objects:
            raise ValueError(
                "Segment the object on this plane first (click on it or draw a box), then "
                "propagate."
            )
        return objects

    # ------------------------------------------------------------------ scripting
    def propagate(self) -> list[int]:
        """Propagate the current objects synchronously; returns the new label ids."""
        widget = self.widget
        if not widget._objects_are_current():
            widget.segment()
        objects = self._objects()
        job = self._job()
        settings = self._settings(job)
        self.stop()
        with widget._model_lock:
            results = drive(self._steps(self._propagation_body(job, objects, settings)))
        return self._write(results)

    # ------------------------------------------------------------------ UI runs
    def start_propagation(self, *_: Any) -> None:
        """Propagate the previewed objects in a worker (Shift+P)."""
        try:
            objects = self._objects()
            job = self._job()
            settings = self._settings(job)
        except (PlaneError, ValueError) as exc:
            self.widget._set_status(str(exc), outcome=True)
            show_warning(f"MobileSAM: {exc}")
            return
        self.stop()
        body = self._propagation_body(job, objects, settings)
        self._run("propagate", self._steps(body), job.n_planes - 1)

    def start_precompute(self, *_: Any) -> None:
        """Embed the planes nearest the current one in the background (resumable)."""
        try:
            job = self._job()
        except (PlaneError, ValueError) as exc:
            self.widget._set_status(str(exc), outcome=True)
            return
        if self.kind == "precompute":
            return
        self.stop()
        cache = self.widget.cache

        def body(predictor: Any):
            return precompute_steps(job.request, job.axis, job.n_planes, predictor, cache)

        total = min(job.n_planes, max(1, cache.max_entries))
        self._run("precompute", self._steps(body), total)

    def _run(self, kind: str, steps: Generator[Any, None, Any], total: int) -> None:
        widget = self.widget
        # Errors are reported by _on_error only: not re-raised into the Qt event loop.
        worker = create_worker(
            locked_steps, widget._model_lock, steps, _start_thread=False, _ignore_errors=True
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(partial(self._on_returned, kind))
        worker.errored.connect(self._on_error)
        worker.warned.connect(widget._on_warned)
        worker.finished.connect(partial(self._on_finished, worker))
        self.worker, self.kind, self._cancelled = worker, kind, False
        self._bar = napari_progress(total=max(1, total), desc=f"MobileSAM: {kind}")
        widget._set_status(f"{kind}...")
        widget._watch_window()
        worker.start()

    def _on_progress(self, item: Any) -> None:
        if self._cancelled or self.widget._closed:
            return  # a step that finished after Cancel: keep "cancelled" on screen
        if hasattr(item, "stage"):  # loading the model: the download shows in the widget
            if item.stage == "download":
                self.widget._on_progress(self.widget._generation, item)
            return
        if isinstance(item, tuple):  # precompute: (plane, done, total)
            plane, done, total = item
            text = f"precomputed {done}/{total} (plane {plane})"
        else:  # propagation
            done = item.done
            text = f"plane {item.plane}: {item.active_objects} object(s) still followed"
        # The status first: napari's bar update can process events, and with them later steps
        # (or Cancel), whose text must not be overwritten by this older one.
        self.widget._set_status(text)
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def _on_returned(self, kind: str, result: Any) -> None:
        if self.widget._closed:
            return
        if kind == "precompute":
            self.widget._set_status(f"precompute done ({result} plane(s) encoded)", outcome=True)
            return
        try:
            self._write(result)
        except (LabelsError, PlaneError, ValueError) as exc:
            # E.g. the labels layer was changed while the walk ran: say so, nothing written.
            show_warning(f"MobileSAM: {exc}")
            self.widget._set_status(f"not written: {exc}", outcome=True)

    def _write(self, results: list[PlaneMasks]) -> list[int]:
        widget = self.widget
        image = widget._require_image()
        labels = widget._target_labels(image)
        report = write_objects(labels, results, widget.protect)
        widget._finish_commit(propagation_summary(report, labels.name, results))
        return report.ids

    def _on_error(self, exc: Exception) -> None:
        if self.widget._closed:
            return
        self.widget._set_status(f"error: {exc}", outcome=True)
        show_error(f"MobileSAM: {exc}")

    def _on_finished(self, worker: GeneratorWorker) -> None:
        if worker is not self.worker:
            return
        self.worker, self.kind = None, None
        self._close_bar()
        if self.widget._closed:
            return
        if self._cancelled:
            paused = self._resume_precompute
            self.widget._set_status("paused for a click" if paused else "cancelled")
        self.widget._show_download(None)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ coordination
    def pause_for_interactive(self) -> None:
        """An interactive run wants the model: stop precompute now, resume it afterwards."""
        if self.kind == "precompute" and self.worker is not None:
            self._resume_precompute = True
            self._cancelled = True
            self.worker.quit()

    def resume_after_interactive(self) -> None:
        if self._resume_precompute and self.worker is None and not self.widget._closed:
            self._resume_precompute = False
            self.start_precompute()

    def stop(self) -> None:
        """Cancel the running 3D work (nothing is written)."""
        self._resume_precompute = False
        if self.worker is not None:
            self._cancelled = True
            self.worker.quit()
            if self.widget._closed:
                self._close_bar()
            else:
                self.widget._set_status("cancelled")
