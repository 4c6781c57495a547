"""The interactive section: the live preview of the current plane's prompts, and the commit.

Every prompt change bumps a generation counter; a result is applied only if nothing changed
while it was computed, so the newest prompts always win. Edits arrive in bursts (dragging a
point emits many events), so runs wait for a short pause (a debounce timer); a finished edit
(a click, a drawn box) runs at once.

A commit asked for while a run is on (K right after a click) is kept pending and settled in
exactly one way: it is done with the first result that matches the prompts on screen, or, when
no such result can come (the run failed, was cancelled, or the plane cannot be read), the
status line says "not committed" and why.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Label
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_mobilesam.layers.labels_writer import LabelsError
from napari_mobilesam.layers.plane import PlaneError
from napari_mobilesam.layers.point_objects_layers import resolved_objects
from napari_mobilesam.layers.segment import (
    Progress,
    SegmentedObject,
    SegmentRequest,
    SegmentResult,
    commit_report,
    drive,
)
from napari_mobilesam.widget import status_text
from napari_mobilesam.widget.preview_objects import PreviewObjects
from napari_mobilesam.widget.status_line import describe_error
from napari_mobilesam.widget.worker_runner import WorkerRunner
from napari_mobilesam.widget.worker_steps import model_steps

if TYPE_CHECKING:
    from napari_mobilesam.widget.host import WidgetHost

# Prompt edits arrive in bursts (dragging a point emits many events); wait this long for quiet.
DEBOUNCE_MS = 120


class InteractiveRunner(WorkerRunner):
    """The live preview and the commit for one dock widget.

    Attributes:
        synchronous: run live updates in the UI thread instead of a worker (scripts, tests).
        shown: the objects of the last applied run, as the preview layer shows them.
        preview: the ``MobileSAM preview`` layer's manager.
        timer: the debounce timer; its timeout starts a run.
        generation: bumped by every change of prompts, plane or settings.
    """

    def __init__(self, host: WidgetHost, parent: QWidget, scores: Label, timing: Label) -> None:
        super().__init__(host)
        self.synchronous = False
        self.shown = PreviewObjects(host, scores)
        self.preview = self.shown.manager
        self.generation = 0
        self._timing = timing
        self._run_generation = -1
        self._rerun = False
        self._commit_requested = False
        self.timer = QTimer(parent)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.start_run)

    # ------------------------------------------------------------------ state
    @property
    def objects(self) -> list[SegmentedObject]:
        """Objects of the last applied run, on the current plane."""
        return list(self.shown.objects)

    def objects_are_current(self) -> bool:
        return self.shown.generation == self.generation

    def invalidate(self, *_: Any, delay_ms: int = DEBOUNCE_MS) -> None:
        """The prompts, plane or settings changed: results in flight are now stale."""
        if self.host.closed:
            return
        self.generation += 1
        if self.host.live:
            self.timer.start(delay_ms)

    # ------------------------------------------------------------------ synchronous
    def segment(self) -> list[SegmentedObject]:
        """Segment the prompts on the current plane now, in this thread; show the preview."""
        self.timer.stop()
        self._rerun = False
        if self.worker is not None:
            self.worker.quit()  # its result will be stale
        self.generation += 1
        generation = self.generation
        request = self.host.capture_request()
        with self.host.model_lock:
            result = drive(self._model_steps(request))
        self.host.status.show_device()
        self.apply_result(generation, request, result)
        return self.objects

    def commit(self) -> list[int]:
        """Write the current objects into the labels layer (one undo step); the new ids."""
        if not self.objects_are_current():
            self.segment()
        return self.commit_now()

    # ------------------------------------------------------------------ runs
    def segment_clicked(self, *_: Any) -> None:
        """The Segment button: run now, whatever ran before."""
        self.generation += 1
        self.start_run()

    def request_commit(self, *_: Any) -> None:
        """Commit from the UI: now if the preview is current, else after the run it needs."""
        if self.objects_are_current() and self.worker is None:
            self.commit_safely()
            return
        self._commit_requested = True
        if self.worker is None:
            self.timer.stop()  # the run starts now: a pending debounce would only restart it
            self.start_run()

    def start_run(self) -> None:
        """Segment the current prompts in a worker (or queue a run behind the running one)."""
        if self.host.closed:
            return
        if self.synchronous:
            self._run_in_ui_thread()
            return
        if self.worker is not None:
            # The worker stops at its next step (an encode in progress still completes and is
            # cached); the run starts again when it has finished.
            self._rerun = True
            self.worker.quit()
            return
        try:
            request = self.host.capture_request()
        except (PlaneError, ValueError) as exc:
            self._cannot_run(exc)
            return
        generation = self.generation
        if not request.prompts.groups:
            self.apply_result(generation, request, SegmentResult())
            return
        encoding = request.cache_key not in self.host.cache
        self.host.status.set("encoding this plane..." if encoding else "decoding...")
        steps = self._model_steps(request)
        self.host.interactive_started()  # the click wins over background work
        self._run_generation = generation
        self.launch(steps, partial(self.apply_result, generation, request))

    def _run_in_ui_thread(self) -> None:
        try:
            self.segment()
        except (PlaneError, ValueError) as exc:
            self._cannot_run(exc)
            return
        self._settle_commit()

    def _cannot_run(self, exc: Exception) -> None:
        """The plane or the prompts cannot be read: say why; a pending commit is not done."""
        self.shown.forget()
        status = self.host.status
        if self._commit_requested:
            self._drop_commit(str(exc))
        elif not (status.outcome_shown and str(exc) in status.text):
            status.set(str(exc))  # ("not committed: <the same reason>" stays in view)

    def _model_steps(self, request: SegmentRequest) -> Generator[Progress, None, SegmentResult]:
        host = self.host
        # The earlier objects let unchanged prompt groups be reused and extended ones refined.
        return model_steps(
            host.loader, host.weights, host.device, request, host.cache, host.multimask,
            tuple(self.shown.objects), host.each_point,
        )  # fmt: skip

    def cancel(self) -> None:
        """Stop the running worker and forget pending runs; a pending commit is not done."""
        self.timer.stop()
        self._rerun = False
        if self.worker is not None:
            self.generation += 1
            self.worker.quit()
            self.host.status.set("cancelled", outcome=True)
        if self._commit_requested:
            self._drop_commit("cancelled")

    def teardown(self) -> None:
        self.timer.stop()
        self._rerun = False
        self._commit_requested = False
        if self.worker is not None:
            self.worker.quit()
        self.preview.remove()

    # ------------------------------------------------------------------ worker callbacks
    def on_load(self, progress: Progress) -> None:
        host = self.host
        if progress.stage == "model":
            host.status.show_device()
        if self._run_generation != self.generation:
            return  # a stale run: its progress would overwrite the newer status
        if progress.stage == "download" and progress.fraction is not None:
            super().on_load(progress)
        elif progress.stage == "model":
            host.status.set("model loaded; encoding...")
        elif progress.stage == "encoded":
            host.status.set("decoding...")

    def on_error(self, exc: Exception) -> None:
        if self._commit_requested:
            # The short reason; the details are in the notification (shown once, by the host).
            self._drop_commit(f"the run failed: {describe_error(exc)[0]}")

    def on_finished(self) -> None:
        # Run again for newer prompts, or for a commit asked for while a now stale run was on.
        if self._rerun or (self._commit_requested and not self.objects_are_current()):
            self._rerun = False
            self.start_run()
            return
        self._settle_commit()
        self.host.interactive_finished()

    def apply_result(self, generation: int, request: SegmentRequest, result: SegmentResult) -> bool:
        """Show a run's result unless something changed since it started; True if applied."""
        if generation != self.generation or self.host.closed:
            return False
        self.shown.show(generation, request, result)
        timing = status_text.timing(result)
        if timing is not None:
            self._timing.value = timing
        if (
            request.prompts.groups
            or not self.host.status.outcome_shown
            or status_text.has_skipped(request.prompts)
        ):
            # A run with nothing to segment (the prompts were just used up by a commit, or
            # another plane is shown) leaves the last outcome in view.
            self.host.status.set(status_text.run_summary(len(self.shown.objects), request.prompts))
        self.host.status.show_device()
        self._settle_commit()
        return True

    # ------------------------------------------------------------------ commit
    def _settle_commit(self) -> None:
        """Do a pending commit if the objects on screen are current (else it stays pending:
        the run that makes them current is on its way)."""
        if self._commit_requested and self.objects_are_current():
            self._commit_requested = False
            self.commit_safely()

    def _drop_commit(self, reason: str) -> None:
        self._commit_requested = False
        self.host.status.set(f"not committed: {reason}", outcome=True)

    def commit_safely(self) -> None:
        """Commit from a key or button: errors become notifications, not tracebacks."""
        try:
            self.commit_now()
        except (LabelsError, PlaneError, ValueError) as exc:
            self.host.status.warn(str(exc))
            self.host.status.set(f"not committed: {exc}", outcome=True)

    def commit_now(self) -> list[int]:
        if not self.shown.objects:
            self.host.status.set("nothing to commit", outcome=True)
            return []
        image = self.host.require_image()
        labels = self.host.target_labels(image)
        objects = self.shown.objects
        if self.host.each_point:  # the pixels the overlap rule gives each object
            objects = resolved_objects(objects)
        report = commit_report(labels, objects, self.host.protect, image)
        self.finish_commit(status_text.commit_summary(report, labels.name))
        return report.ids

    def finish_commit(self, message: str) -> None:
        """Report a commit, then clear the objects and remove the prompts that made them."""
        prompts = self.shown.prompts
        self.host.status.info(message)
        self.host.status.set(message, outcome=True)
        self.shown.forget()
        if prompts is not None:
            used_shapes = tuple(g.shape_index for g in prompts.groups if g.shape_index is not None)
            self.remove_prompts(prompts.point_indices, used_shapes)

    def reset(self) -> None:
        """Remove the prompts on the current plane and clear the preview."""
        self.cancel()
        prompts = self.shown.prompts
        if prompts is None or not self.objects_are_current():
            try:
                prompts = self.host.capture_request().prompts
            except (PlaneError, ValueError):
                prompts = None
        self.shown.forget()
        if prompts is not None:
            self.remove_prompts(prompts.point_indices, prompts.shape_indices)
        self.host.status.set("reset")

    def remove_prompts(
        self, point_indices: tuple[int, ...], shape_indices: tuple[int, ...]
    ) -> None:
        for layer, indices in (
            (self.host.points_layer, point_indices),
            (self.host.shapes_layer, shape_indices),
        ):
            if layer is not None and indices:
                layer.selected_data = set(indices)
                layer.remove_selected()
