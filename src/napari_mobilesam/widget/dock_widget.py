"""The ``MobileSAM`` dock widget: pick layers, prompt, watch a live preview, commit to Labels.

Model work (building the model, encoding, decoding) runs in a napari thread worker written as a
generator, so Cancel and newer prompts stop it between steps; layers are only read or written on
the main thread (when a run starts and in the worker's callbacks). Every prompt change bumps a
generation counter and a result is applied only if nothing changed while it was computed, so the
newest prompts always win.

The scripting methods (:meth:`MobileSAMWidget.segment`, :meth:`~MobileSAMWidget.commit`, ...)
run synchronously in the calling thread.

Worker errors are shown once, in the status line and as a notification; they are never re-raised
into the Qt event loop. The widget tears itself down (stops its workers, unbinds its keys,
disconnects from the viewer) when it is closed, taken out of its dock, or when napari's main
window closes.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path
from typing import Any

import napari
from napari.layers import Image, Labels, Layer, Points, Shapes
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QMainWindow, QWidget

from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.predictor_loader import PredictorLoader
from napari_mobilesam.layers.labels_writer import LabelsError, check_target, create_aligned_labels
from napari_mobilesam.layers.layer_prompts import PlanePrompts
from napari_mobilesam.layers.plane import PlaneError, PlaneRef, spatial_shape
from napari_mobilesam.layers.preview_layer import PreviewManager, add_keeping_selection
from napari_mobilesam.layers.prompt_layer_setup import (
    make_points_layer,
    make_shapes_layer,
    new_points_positive,
    set_new_points_positive,
)
from napari_mobilesam.layers.segment import (
    Progress,
    SegmentedObject,
    SegmentRequest,
    SegmentResult,
    capture_request,
    commit_report,
    drive,
    normalisation_key,
)
from napari_mobilesam.widget import status_text
from napari_mobilesam.widget.controls import MobileSAMControls
from napari_mobilesam.widget.everything_runner import EverythingRunner
from napari_mobilesam.widget.sections import breakable
from napari_mobilesam.widget.stack_runner import KEY_PROPAGATE, StackRunner
from napari_mobilesam.widget.worker_steps import locked_steps, model_steps

# Viewer-level keys. None of them is a default key of napari's Points, Shapes, Labels or Image
# layers, whose keymaps would otherwise take precedence while such a layer is selected.
KEY_TOGGLE_POLARITY = "n"
KEY_NEXT_CANDIDATE = "j"
KEY_COMMIT = "k"
KEY_RESET = "Shift-R"

# Prompt edits arrive in bursts (dragging a point emits many events); wait this long for quiet.
DEBOUNCE_MS = 120

_UNFINISHED_ACTIONS = {"adding", "removing", "changing"}


class _CloseWatcher(QObject):
    """Calls back when the widget is closed, taken out of its dock, or its main window goes.

    The main window is watched from the moment the widget is found inside one (docking, showing
    or starting a run). Its close is taken as final when the window is about to be deleted
    (napari's main window deletes itself on close), or at once for a close from code
    (``viewer.close()``); a close by the user can still be cancelled in napari's dialog.
    """

    def __init__(self, callback: Callable[[], None], widget: QWidget) -> None:
        super().__init__(widget)
        self._callback = callback
        self._widget = widget
        # A weak reference: the watcher must not keep napari's window (and viewer) alive.
        self._window: weakref.ref[QWidget] | None = None
        widget.installEventFilter(self)

    def watch_window(self) -> None:
        """Also watch the main window the widget is in now (if it is in one)."""
        window = self._widget.window()
        watched = self._window() if self._window is not None else None
        if isinstance(window, QMainWindow) and window is not watched:
            if watched is not None:
                watched.removeEventFilter(self)
            self._window = weakref.ref(window)
            window.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        widget = getattr(self, "_widget", None)
        if widget is None:
            # Qt can still deliver events while Python tears this object down (its attributes
            # are already gone): there is nothing left to watch.
            return False
        kind = event.type()
        if watched is widget:
            if kind == QEvent.Type.Close or (
                kind == QEvent.Type.ParentChange and watched.parent() is None
            ):
                self._callback()
            elif kind in (QEvent.Type.ParentChange, QEvent.Type.Show):
                self.watch_window()
        elif kind == QEvent.Type.DeferredDelete or (
            kind == QEvent.Type.Close and not event.spontaneous()
        ):
            self._callback()
        return False


class MobileSAMWidget(MobileSAMControls):
    """Interactive MobileSAM segmentation of the viewer's current plane.

    Scripting (all synchronous)::

        widget = MobileSAMWidget(viewer)           # or docked from the Plugins menu
        widget.set_image_layer(image)
        widget.set_prompt_layers(points, shapes)   # or widget.create_prompt_layers()
        widget.set_labels_layer(labels)            # None: a new layer on the first commit
        widget.set_weights("mobile_sam.pt")
        objects = widget.segment()                 # list[SegmentedObject], preview shown
        new_ids = widget.commit()                  # list[int], one undo step
        new_ids = widget.segment_and_commit()
        report = widget.everything.run()           # Segment everything, one undo step

    Attributes:
        synchronous: run live updates in the UI thread instead of a worker (scripts, tests).
        loader: builds and keeps the predictor for the chosen weights and device.
        cache: embeddings of recently encoded planes.
    """

    # Set in __init__; the layer choices are first listed before that (by the base class).
    _preview: PreviewManager | None = None

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self.synchronous = False
        self.loader = PredictorLoader()
        self.cache = EmbeddingCache()
        self._model_lock = threading.Lock()
        self._objects: list[SegmentedObject] = []
        self._objects_generation = -1
        self._prompts: PlanePrompts | None = None
        self._active = 0
        self._generation = 0
        self._worker: GeneratorWorker | None = None
        self._rerun = False
        self._commit_requested = False
        self._preview = PreviewManager(viewer)
        self._viewer_connections: list[tuple[Any, Callable]] = []
        self._layer_connections: list[tuple[Any, Callable]] = []
        self._bound_keys: list[str] = []
        self._closed = False
        self._download_bar: Any = None
        self._outcome_shown = False
        self._linked_image: Image | None = None
        image = self.image_layer
        self.stack = StackRunner(self, expanded=image is not None and len(spatial_shape(image)) > 2)

        # Sections below the model settings, top to bottom: each panel (a FormSection) is one
        # add_section line here; finish_layout adds the Keys section and aligns all labels.
        self.add_section(self.stack.panel)
        self.everything = EverythingRunner(self)
        self.add_section(self.everything.panel)
        self.finish_layout()

        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._start_run)
        self._watcher = _CloseWatcher(self._teardown, self.native)

        self._connect_controls()
        self._connect_viewer()
        self._bind_keys()
        self._relink_layers()

    # ------------------------------------------------------------------ state
    @property
    def objects(self) -> list[SegmentedObject]:
        """Objects of the last applied run, on the current plane."""
        return list(self._objects)

    @property
    def preview_layer(self) -> Labels | None:
        """The ``MobileSAM preview`` layer, once something was previewed."""
        return self._preview.layer if self._preview is not None else None

    def _hidden_layer(self) -> Layer | None:
        return self.preview_layer

    @property
    def worker(self) -> GeneratorWorker | None:
        """The running worker, if any."""
        return self._worker

    # ------------------------------------------------------------------ scripting API
    def use_predictor(self, predictor: Any, weights: str | Path | None, device: str) -> None:
        """Share an already built ``SamPredictor`` made from ``weights`` on ``device``.

        The widget's weights and device fields are set to match, so no model is built again.
        """
        self.loader.set_predictor(predictor, weights, device)
        self.set_weights(weights)
        self.device = device

    def create_prompt_layers(self) -> tuple[Points, Shapes]:
        """Add a Points and a Shapes layer aligned to the image and select them as prompts.

        The Points layer becomes the selected layer, in add mode, so clicks add prompts.
        """
        image = self._require_image()
        points = make_points_layer(image)
        set_new_points_positive(points, self.new_points_positive)
        shapes = make_shapes_layer(image)
        self.viewer.add_layer(shapes)
        self.viewer.add_layer(points)
        self.set_prompt_layers(points, shapes)
        self.viewer.layers.selection.active = points
        points.mode = "add"
        return points, shapes

    def segment(self) -> list[SegmentedObject]:
        """Segment the prompts on the current plane now, in this thread; show the preview.

        Stops a running worker first (its result is dropped). Returns one object per prompt
        group, as :func:`napari_mobilesam.layers.segment.segment_from_layers` does.
        """
        self._stop_worker()
        self._generation += 1
        generation = self._generation
        request = self._capture_request()
        with self._model_lock:
            result = drive(self._model_steps(request))
        self._show_device()
        self._apply(generation, request, result)
        return self.objects

    def commit(self) -> list[int]:
        """Write the current objects into the labels layer (one undo step); return the new ids.

        Segments first (synchronously) when the prompts changed since the last result. The
        used prompts are removed afterwards.
        """
        if not self._objects_are_current():
            self.segment()
        return self._commit_now()

    def segment_and_commit(self) -> list[int]:
        """Segment the current prompts and commit them; returns the new label ids."""
        self.segment()
        return self._commit_now()

    def propagate(self) -> list[int]:
        """Follow the current objects through the stack and write them; returns the new ids.

        Synchronous. Segments the current prompts first if needed; the walk axis and stop rules
        come from the widget's 3D section; the whole 3D result is one undo step.
        """
        return self.stack.propagate()

    def next_candidate(self) -> int | None:
        """Show the next of the current object's candidate masks; returns its index."""
        if not self._objects:
            return None
        chosen = self._objects[min(self._active, len(self._objects) - 1)].cycle()
        self._draw_preview(self._objects[0].plane)
        self._scores_label.value = status_text.candidate_scores(self._objects, self._active)
        return chosen

    def toggle_point_polarity(self) -> bool:
        """Switch new points between positive and negative; returns True for positive."""
        self.new_points_positive = not self.new_points_positive
        return self.new_points_positive

    def cancel(self) -> None:
        """Stop the running worker and forget pending runs and commits."""
        self._timer.stop()
        self._rerun = False
        self._commit_requested = False
        self.stack.stop()
        self.everything.stop()
        if self._worker is not None:
            self._generation += 1
            self._worker.quit()
            self._set_status("cancelled", outcome=True)

    def reset(self) -> None:
        """Remove the prompts on the current plane and clear the preview."""
        self.cancel()
        prompts = self._prompts
        if prompts is None or not self._objects_are_current():
            try:
                prompts = self._capture_request().prompts
            except (PlaneError, ValueError):
                prompts = None
        self._forget_objects()
        if prompts is not None:
            self._remove_prompts(prompts.point_indices, prompts.shape_indices)
        self._set_status("reset")

    def close(self) -> None:
        """Unbind the widget's keys and stop its work, then close it."""
        self._teardown()
        super().close()

    # ------------------------------------------------------------------ wiring
    def _connect_controls(self) -> None:
        for combo in (self._image_combo, self._points_combo, self._shapes_combo):
            combo.changed.connect(self._relink_layers)
        self._make_prompts_button.changed.connect(self.create_prompt_layers)
        self._polarity_combo.changed.connect(self._on_polarity_choice)
        self._weights_edit.changed.connect(self._on_model_choice)
        self._device_combo.changed.connect(self._on_model_choice)
        self._runtime_combo.changed.connect(self._on_model_choice)
        self._live_check.changed.connect(self._on_live_toggled)
        self._multimask_check.changed.connect(self._invalidate)
        self._segment_button.changed.connect(self._on_segment_clicked)
        self._commit_button.changed.connect(self._request_commit)
        self._cancel_button.changed.connect(self.cancel)
        self._reset_button.changed.connect(self.reset)

    def _watch(self, store: list[tuple[Any, Callable]], emitter: Any, callback: Callable) -> None:
        emitter.connect(callback)
        store.append((emitter, callback))

    @staticmethod
    def _unwatch(store: list[tuple[Any, Callable]]) -> None:
        for emitter, callback in store:
            emitter.disconnect(callback)
        store.clear()

    def _connect_viewer(self) -> None:
        layers = self.viewer.layers.events
        for emitter in (layers.inserted, layers.removed, layers.moved, layers.reordered):
            self._watch(self._viewer_connections, emitter, self._on_layers_changed)
        self._watch(self._viewer_connections, layers.removed, self._on_layer_removed)
        dims = self.viewer.dims.events
        for emitter in (dims.point, dims.ndisplay, dims.order):
            self._watch(self._viewer_connections, emitter, self._invalidate)
        for emitter in (dims.ndisplay, dims.order):
            self._watch(self._viewer_connections, emitter, lambda *_: self.stack.refresh_axes())

    def _bind_keys(self) -> None:
        actions: dict[str, Callable[[], Any]] = {
            KEY_TOGGLE_POLARITY: self.toggle_point_polarity,
            KEY_NEXT_CANDIDATE: self.next_candidate,
            KEY_COMMIT: self._request_commit,
            KEY_RESET: self.reset,
            KEY_PROPAGATE: self.stack.start_propagation,
        }
        for key, action in actions.items():

            def handler(viewer: napari.viewer.Viewer, action: Callable[[], Any] = action) -> None:
                action()

            self.viewer.bind_key(key, handler, overwrite=True)
            self._bound_keys.append(key)

    def _watch_window(self) -> None:
        """Tear down with the main window too (called when work starts; showing also does)."""
        self._watcher.watch_window()

    def _teardown(self) -> None:
        """Unbind keys, disconnect events, stop work and remove the preview (runs once)."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        self._rerun = False
        self.stack.stop()
        self.everything.stop()
        if self._worker is not None:
            self._worker.quit()
        for key in self._bound_keys:
            self.viewer.bind_key(key, None)
        self._bound_keys.clear()
        self._unwatch(self._viewer_connections)
        self._unwatch(self._layer_connections)
        self._show_download(None)
        self._preview.remove()

    def _on_layers_changed(self, event: Any = None) -> None:
        self.reset_choices()

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        self.cache.invalidate_layer(str(layer.unique_id))
        self._preview.layer_removed(layer)
        if isinstance(layer, (Image, Points, Shapes)):
            # The layer choice may not emit a change when its last layer goes, so a run in
            # flight for the removed layer must be made stale here.
            self._relink_layers()

    def _relink_layers(self, *_: Any) -> None:
        """Follow the chosen layers' events (called whenever a layer choice changes)."""
        if self._closed:
            return
        self._unwatch(self._layer_connections)
        image, points, shapes = self.image_layer, self.points_layer, self.shapes_layer
        if image is not None:
            self._watch(self._layer_connections, image.events.data, self._on_image_data)
            self._watch(self._layer_connections, image.events.contrast_limits, self._on_contrast)
        for layer in (points, shapes):
            if layer is not None:
                self._watch(self._layer_connections, layer.events.data, self._on_prompt_event)
        if points is not None:
            self._watch(self._layer_connections, points.events.features, self._on_prompt_event)
            # napari changes the defaults too: selecting a point makes new points copy it.
            self._watch(
                self._layer_connections, points.events.feature_defaults, self._on_points_defaults
            )
            self._on_points_defaults()
        if image is not self._linked_image:
            self._linked_image = image
            self._retarget_labels(image)
        if image is None or self._preview.image_id != str(image.unique_id):
            self._forget_objects()
        self.stack.refresh_axes()
        self._invalidate()

    def _retarget_labels(self, image: Image | None) -> None:
        """Another image: keep the labels choice if it fits it, else pick a Labels layer that
        does (the one named after the image first), else "create new"."""
        if image is None:
            return

        def fits(layer: Labels) -> bool:
            try:
                check_target(layer, image)
            except LabelsError:
                return False
            return True

        current = self.labels_layer
        if current is not None and fits(current):
            return
        candidates = [layer for layer in self._labels_combo.choices if layer is not None]
        candidates.sort(key=lambda layer: layer.name != f"{image.name} labels")
        self._labels_combo.value = next((layer for layer in candidates if fits(layer)), None)

    def _on_points_defaults(self, event: Any = None) -> None:
        """Show the polarity the points layer gives new points (a change of the choice also
        sets the layer's colour swatch, in _on_polarity_choice)."""
        points = self.points_layer
        if points is not None:
            self.new_points_positive = new_points_positive(points)

    def _on_image_data(self, event: Any = None) -> None:
        image = self.image_layer
        if image is not None:
            self.cache.invalidate_layer(str(image.unique_id))
        self._invalidate()

    def _on_contrast(self, event: Any = None) -> None:
        # Embeddings made with other limits will not be asked for again; free their memory.
        image = self.image_layer
        if image is not None:
            self.cache.retain_normalisation(str(image.unique_id), normalisation_key(image))
        self._invalidate()

    def _on_prompt_event(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if str(getattr(action, "value", action)) in _UNFINISHED_ACTIONS:
            return
        # A finished edit (a click, a drawn box, the end of a drag) is one event: run at once
        # instead of waiting out the debounce, which is there for slider scrubbing.
        self._invalidate(delay_ms=0)

    def _on_polarity_choice(self, *_: Any) -> None:
        points = self.points_layer
        if points is not None:
            set_new_points_positive(points, self.new_points_positive)

    def _on_model_choice(self, *_: Any) -> None:
        # Embeddings depend on the weights; the predictor is rebuilt on the next run.
        self.cache.clear()
        self.loader.forget_failures()  # picking a device again retries one that failed
        self.loader.runtime_choice = self.runtime
        self._device_label.value = "not loaded yet"
        self._invalidate()

    def _on_live_toggled(self, value: bool) -> None:
        if value:
            self._invalidate()

    # ------------------------------------------------------------------ runs
    def _invalidate(self, *_: Any, delay_ms: int = DEBOUNCE_MS) -> None:
        """The prompts, plane or settings changed: results in flight are now stale."""
        if self._closed:
            return
        self._generation += 1
        if self.live:
            self._timer.start(delay_ms)

    def _objects_are_current(self) -> bool:
        return self._objects_generation == self._generation

    def _require_image(self) -> Image:
        image = self.image_layer
        if image is None:
            raise ValueError("Choose an image layer first (add one to the viewer).")
        return image

    def _capture_request(self) -> SegmentRequest:
        return capture_request(
            self.viewer, self._require_image(), self.points_layer, self.shapes_layer
        )

    def _model_steps(self, request: SegmentRequest) -> Generator[Progress, None, SegmentResult]:
        # The earlier objects let unchanged prompt groups be reused and extended ones refined.
        return model_steps(
            self.loader,
            self.weights,
            self.device,
            request,
            self.cache,
            self.multimask,
            tuple(self._objects),
        )

    def _on_segment_clicked(self, *_: Any) -> None:
        self._generation += 1
        self._start_run()

    def _request_commit(self, *_: Any) -> None:
        """Commit from the UI: now if the preview is current, else after the run it needs."""
        if self._objects_are_current() and self._worker is None:
            self._commit_safely()
            return
        self._commit_requested = True
        if self._worker is None:
            self._start_run()

    def _start_run(self) -> None:
        """Segment the current prompts in a worker (or queue a run behind the running one)."""
        if self._closed:
            return
        if self.synchronous:
            self._run_in_ui_thread()
            return
        if self._worker is not None:
            # The worker stops at its next step (an encode in progress still completes and is
            # cached); the run starts again when it has finished.
            self._rerun = True
            self._worker.quit()
            return
        try:
            request = self._capture_request()
        except (PlaneError, ValueError) as exc:
            self._commit_requested = False
            self._forget_objects()
            self._set_status(str(exc))
            return
        generation = self._generation
        if not request.prompts.groups:
            self._apply(generation, request, SegmentResult())
            return
        encoding = request.cache_key not in self.cache
        self._set_status("encoding this plane..." if encoding else "decoding...")
        steps = self._model_steps(request)
        self.stack.pause_for_interactive()  # the click wins over background precompute
        self._watch_window()
        # Errors are reported by _on_error only: not re-raised into the Qt event loop.
        worker = create_worker(
            locked_steps, self._model_lock, steps, _start_thread=False, _ignore_errors=True
        )
        worker.yielded.connect(partial(self._on_progress, generation))
        worker.returned.connect(partial(self._apply, generation, request))
        worker.errored.connect(self._on_error)
        worker.warned.connect(self._on_warned)
        worker.finished.connect(partial(self._on_finished, worker))
        self._worker = worker
        worker.start()

    def _run_in_ui_thread(self) -> None:
        try:
            self.segment()
        except (PlaneError, ValueError) as exc:
            self._commit_requested = False
            self._forget_objects()
            self._set_status(str(exc))
            return
        if self._commit_requested:
            self._commit_requested = False
            self._commit_safely()

    def _stop_worker(self) -> None:
        self._timer.stop()
        self._rerun = False
        if self._worker is not None:
            self._worker.quit()

    def _on_progress(self, generation: int, progress: Progress) -> None:
        if self._closed:
            return
        if progress.stage == "model":
            self._show_device()
        if generation != self._generation:
            return  # a stale run: its progress would overwrite the newer status
        if progress.stage == "download" and progress.fraction is not None:
            self._show_download(progress.fraction)
            self._set_status(f"downloading weights: {100 * progress.fraction:.0f}%")
        elif progress.stage == "model":
            self._set_status("model loaded; encoding...")
        elif progress.stage == "encoded":
            self._set_status("decoding...")

    def _show_download(self, fraction: float | None) -> None:
        """napari's progress bar for a weights download; ``None`` closes it."""
        if fraction is None:
            if self._download_bar is not None:
                self._download_bar.close()
                self._download_bar = None
            return
        if self._download_bar is None:
            self._download_bar = napari_progress(total=100, desc="Downloading mobile_sam.pt")
        self._download_bar.update(int(100 * fraction) - self._download_bar.n)

    def _on_error(self, exc: Exception) -> None:
        # napari's worker classes do not relay errors or warnings to the notification area
        # (their notifying mixin never gets initialised), so the widget does it, once.
        self._show_download(None)
        if self._closed:
            return
        self._commit_requested = False
        self._set_status(f"error: {exc}", outcome=True)
        show_error(f"MobileSAM: {exc}")

    def _on_warned(self, show_warning_args: tuple) -> None:
        """A warning raised in the worker (e.g. the fall-back from a failed GPU)."""
        if not self._closed:
            show_warning(f"MobileSAM: {show_warning_args[0]}")

    def _on_finished(self, worker: GeneratorWorker) -> None:
        self._show_download(None)
        if worker is not self._worker:
            return
        self._worker = None
        if self._closed:
            return
        # Run again for newer prompts, or for a commit asked for while a now stale run was on.
        if self._rerun or (self._commit_requested and not self._objects_are_current()):
            self._rerun = False
            self._start_run()
        else:
            self.stack.resume_after_interactive()

    def _apply(self, generation: int, request: SegmentRequest, result: SegmentResult) -> bool:
        """Show a run's result unless something changed since it started; True if applied."""
        if generation != self._generation or self._closed:
            return False
        earlier = self._objects
        self._objects = list(result.objects)
        self._objects_generation = generation
        self._prompts = request.prompts
        # The object whose prompts just changed is the one the candidate key acts on.
        decoded = [
            i
            for i, obj in enumerate(self._objects)
            if not any(obj.masks is old.masks for old in earlier)
        ]
        if decoded:
            self._active = decoded[-1]
        self._active = min(self._active, max(len(self._objects) - 1, 0))
        self._draw_preview(request.plane)
        self._scores_label.value = status_text.candidate_scores(self._objects, self._active)
        timing = status_text.timing(result)
        if timing is not None:
            self._timing_label.value = timing
        if request.prompts.groups or not self._outcome_shown or _has_skipped(request.prompts):
            # A run with nothing to segment (the prompts were just used up by a commit, or
            # another plane is shown) leaves the last outcome in view.
            self._set_status(status_text.run_summary(len(self._objects), request.prompts))
        self._show_device()
        if self._commit_requested:
            self._commit_requested = False
            self._commit_safely()
        return True

    # ------------------------------------------------------------------ commit
    def _commit_safely(self) -> None:
        """Commit from a key or button: errors become notifications, not tracebacks."""
        try:
            self._commit_now()
        except (LabelsError, PlaneError, ValueError) as exc:
            show_warning(f"MobileSAM: {exc}")
            self._set_status(f"not committed: {exc}", outcome=True)

    def _commit_now(self) -> list[int]:
        if not self._objects:
            self._set_status("nothing to commit", outcome=True)
            return []
        image = self._require_image()
        labels = self._target_labels(image)
        report = commit_report(labels, self._objects, self.protect, image)
        self._finish_commit(status_text.commit_summary(report, labels.name))
        return report.ids

    def _target_labels(self, image: Image) -> Labels:
        """The chosen Labels layer (one aligned to the image is created if none is), checked."""
        labels = self.labels_layer
        if labels is None:
            labels = create_aligned_labels(image)
            add_keeping_selection(self.viewer, labels)
            self.set_labels_layer(labels)
        check_target(labels, image)
        return labels

    def _finish_commit(self, message: str) -> None:
        """Report a commit, then clear the objects and remove the prompts that made them."""
        prompts = self._prompts
        show_info(f"MobileSAM: {message}")
        self._set_status(message, outcome=True)
        self._forget_objects()
        if prompts is not None:
            used_shapes = tuple(g.shape_index for g in prompts.groups if g.shape_index is not None)
            self._remove_prompts(prompts.point_indices, used_shapes)

    def _remove_prompts(
        self, point_indices: tuple[int, ...], shape_indices: tuple[int, ...]
    ) -> None:
        for layer, indices in (
            (self.points_layer, point_indices),
            (self.shapes_layer, shape_indices),
        ):
            if layer is not None and indices:
                layer.selected_data = set(indices)
                layer.remove_selected()

    # ------------------------------------------------------------------ display
    def _draw_preview(self, plane: PlaneRef) -> None:
        image = self.image_layer
        if not self._objects or image is None:
            self._preview.clear()
            return
        self._preview.show(image, plane, [obj.mask for obj in self._objects])

    def _forget_objects(self) -> None:
        self._objects = []
        self._objects_generation = -1
        self._prompts = None
        self._active = 0
        self._preview.clear()
        self._scores_label.value = "-"

    def _set_status(self, text: str, outcome: bool = False) -> None:
        """Show ``text`` in the status line. An ``outcome`` (a commit, a propagation, an error)
        stays until the next action, instead of being replaced by "0 object(s)"."""
        if self._closed:
            return
        self._status_label.value = breakable(text)
        self._outcome_shown = outcome

    def _show_device(self) -> None:
        if self.loader.device is not None:
            path = self.loader.source
            source = "random weights" if path is None else path.name
            runtime = self.loader.runtime
            encoder = "" if runtime in (None, "torch") else f", encoder: {runtime}"
            self._device_label.value = f"{self.loader.device} ({source}{encoder})"


def _has_skipped(prompts: PlanePrompts) -> bool:
    """Whether some prompts on the plane were ignored (the status line says why)."""
    return bool(
        prompts.skipped_shapes
        or prompts.skipped_negative_points
        or prompts.skipped_outside_points
        or prompts.skipped_outside_shapes
    )
