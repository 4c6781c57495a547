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
from typing import TYPE_CHECKING, Any

from napari_mobilesam.engine.steps import drive
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
from napari_mobilesam.widget.worker_runner import WorkerRunner
from napari_mobilesam.widget.worker_steps import loaded_steps

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_mobilesam.widget.host import WidgetHost


KEY_PROPAGATE = "Shift-P"


@dataclasses.dataclass
class _Job:
    """What a 3D run needs, captured on the main thread."""

    request: SegmentRequest
    axis: int
    n_planes: int


class StackRunner(WorkerRunner):
    """Owns the 3D panel and its worker for one dock widget."""

    def __init__(self, host: WidgetHost) -> None:
        super().__init__(host)
        image = host.image_layer
        self.panel = StackPanel(expanded=image is not None and _is_stack(image))
        self.kind: str | None = None  # "propagate" or "precompute" while a worker runs
        self._resume_precompute = False
        self.panel._propagate_button.changed.connect(self.start_propagation)
        self.panel._precompute_button.changed.connect(self.start_precompute)
        self.panel._disk_check.changed.connect(self.set_disk_cache)

    def set_disk_cache(self, enabled: bool) -> None:
        """Also keep embeddings on disk (the user cache folder), or memory only."""
        from napari_mobilesam.engine.disk_cache import default_cache_folder

        self.host.cache.disk_folder = default_cache_folder() if enabled else None

    def image_changed(self, image: Image | None) -> None:
        """Another image was chosen: open the section for a stack (a 2D image leaves it as
        the user set it)."""
        if image is not None and _is_stack(image):
            self.panel.expanded = True

    # ------------------------------------------------------------------ capture
    def refresh_axes(self, *_: Any) -> None:
        """Offer the current plane's non-displayed axes in the axis box."""
        try:
            plane = self.host.capture_request().plane
        except (PlaneError, ValueError):
            return
        labels = self.host.viewer.dims.axis_labels
        offset = len(labels) - len(plane.slice_index)
        axes = [(f"{labels[axis + offset]} (axis {axis})", axis) for axis in walk_axes(plane)]
        self.panel.set_axis_choices(axes)

    def _job(self) -> _Job:
        host = self.host
        request = host.capture_request()
        axis = self.panel.walk_axis
        axis = default_walk_axis(request.plane) if axis is None else axis
        if request.plane.slice_index[axis] is None:
            raise ValueError("The walk axis is displayed now; choose another axis.")
        n_planes = int(spatial_shape(host.require_image())[axis])
        return _Job(request, axis, n_planes)

    def _steps(self, body: Any) -> Generator[Any, None, Any]:
        """Load the model if needed (download progress included), then run ``body``; a GPU
        failure falls back to the CPU as in the 2D path."""
        host = self.host
        return (yield from loaded_steps(host.loader, host.weights, host.device, host.cache, body))

    def _propagation_body(self, job: _Job, objects: list, settings: Any):
        def body(predictor: Any):
            return propagation_steps(
                job.request, objects, job.axis, job.n_planes, predictor, self.host.cache,
                settings,
            )  # fmt: skip

        return body

    def _settings(self, job: _Job) -> Any:
        host = self.host
        start = job.request.plane.slice_index[job.axis]
        settings = self.panel.settings(start, job.n_planes)
        markers = stop_planes(
            host.points_layer, host.require_image(), job.request.plane, job.axis, host.viewer
        )
        return dataclasses.replace(settings, stop_planes=markers)

    def _objects(self) -> list:
        objects = self.host.current_objects()
        if not objects:
            raise ValueError(
                "Segment the object on this plane first (click on it or draw a box), then "
                "propagate."
            )
        return objects

    # ------------------------------------------------------------------ scripting
    def propagate(self) -> list[int]:
        """Propagate the current objects synchronously; returns the new label ids."""
        host = self.host
        if not host.current_objects():
            host.segment()
        objects = self._objects()
        job = self._job()
        settings = self._settings(job)
        self.stop()
        with host.model_lock:
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
            self.host.status.set(str(exc), outcome=True)
            self.host.status.warn(str(exc))
            return
        self.stop()
        body = self._propagation_body(job, objects, settings)
        self._run("propagate", self._steps(body), job.n_planes - 1)

    def start_precompute(self, *_: Any) -> None:
        """Embed the planes nearest the current one in the background (resumable)."""
        try:
            job = self._job()
        except (PlaneError, ValueError) as exc:
            self.host.status.set(str(exc), outcome=True)
            return
        if self.kind == "precompute":
            return
        self.stop()
        cache = self.host.cache

        def body(predictor: Any):
            return precompute_steps(job.request, job.axis, job.n_planes, predictor, cache)

        total = min(job.n_planes, max(1, cache.max_entries))
        self._run("precompute", self._steps(body), total)

    def _run(self, kind: str, steps: Generator[Any, None, Any], total: int) -> None:
        self.kind = kind
        self.host.status.set(f"{kind}...")
        self.launch(steps, partial(self._on_returned, kind), bar=(total, f"MobileSAM: {kind}"))

    def on_step(self, item: Any) -> None:
        if isinstance(item, tuple):  # precompute: (plane, done, total)
            plane, done, total = item
            text = f"precomputed {done}/{total} (plane {plane})"
        else:  # propagation
            done = item.done
            text = f"plane {item.plane}: {item.active_objects} object(s) still followed"
        # The status first: napari's bar update can process events, and with them later steps
        # (or Cancel), whose text must not be overwritten by this older one.
        self.host.status.set(text)
        self.advance_bar(done)

    def _on_returned(self, kind: str, result: Any) -> None:
        if self.host.closed:
            return
        if kind == "precompute":
            self.host.status.set(f"precompute done ({result} plane(s) encoded)", outcome=True)
            return
        try:
            self._write(result)
        except (LabelsError, PlaneError, ValueError) as exc:
            # E.g. the labels layer was changed while the walk ran: say so, nothing written.
            self.host.status.warn(str(exc))
            self.host.status.set(f"not written: {exc}", outcome=True)

    def _write(self, results: list[PlaneMasks]) -> list[int]:
        host = self.host
        image = host.require_image()
        labels = host.target_labels(image)
        report = write_objects(labels, results, host.protect)
        host.finish_commit(propagation_summary(report, labels.name, results))
        return report.ids

    def on_finished(self) -> None:
        self.kind = None
        if self.cancelled:
            paused = self._resume_precompute
            self.host.status.set("paused for a click" if paused else "cancelled")

    # ------------------------------------------------------------------ coordination
    def pause_for_interactive(self) -> None:
        """An interactive run wants the model: stop precompute now, resume it afterwards."""
        if self.kind == "precompute" and self.worker is not None:
            self._resume_precompute = True
            self.cancelled = True
            self.worker.quit()

    def resume_after_interactive(self) -> None:
        if self._resume_precompute and self.worker is None and not self.host.closed:
            self._resume_precompute = False
            self.start_precompute()

    def stop(self) -> bool:
        """Cancel the running 3D work (nothing is written)."""
        self._resume_precompute = False
        stopped = super().stop()
        if stopped and not self.host.closed:
            self.host.status.set("cancelled")
        return stopped


def _is_stack(image: Image) -> bool:
    return len(spatial_shape(image)) > 2
