"""The ``MobileSAM`` dock widget: pick layers, prompt, watch a live preview, commit to Labels.

The widget is made of parts. :class:`~napari_mobilesam.widget.controls.MobileSAMControls`
builds the controls; the sections that run the model are runners built on
:class:`~napari_mobilesam.widget.worker_runner.WorkerRunner`: the interactive preview and commit
(:mod:`~napari_mobilesam.widget.interactive`), the 3D section (:mod:`.stack_runner`) and
"Segment everything" (:mod:`.everything_runner`). Each sees this widget only through the public
:class:`~napari_mobilesam.widget.host.WidgetHost` interface. :mod:`.layer_links` follows the
viewer's and the chosen layers' events, :mod:`.status_line` shows what happens.

Adding a section: a panel (a ``FormSection`` subclass with its controls), a runner that takes
the widget as its host, and two lines in ``MobileSAMWidget.__init__`` (build it,
``add_section`` its panel); stop it in :meth:`MobileSAMWidget.cancel` and ``_teardown``.

Model work runs in napari thread workers written as generators, so Cancel and newer prompts stop
it between steps; layers are only read or written on the main thread. The scripting methods
(:meth:`MobileSAMWidget.segment`, :meth:`~MobileSAMWidget.commit`, ...) run synchronously in
the calling thread. Worker errors are shown once, in the status line and as a notification;
they are never re-raised into the Qt event loop. The widget tears itself down (stops its
workers, unbinds its keys, disconnects from the viewer) when it is closed, taken out of its
dock, or when napari's main window closes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
from napari.layers import Image, Labels, Layer, Points, Shapes
from napari.qt.threading import GeneratorWorker

from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.predictor_loader import PredictorLoader
from napari_mobilesam.layers.labels_writer import check_target, create_aligned_labels
from napari_mobilesam.layers.preview_layer import add_keeping_selection
from napari_mobilesam.layers.prompt_layer_setup import (
    make_points_layer,
    make_shapes_layer,
    set_new_points_positive,
)
from napari_mobilesam.layers.segment import SegmentedObject, SegmentRequest, capture_request
from napari_mobilesam.widget.close_watcher import CloseWatcher
from napari_mobilesam.widget.controls import MobileSAMControls
from napari_mobilesam.widget.everything_runner import EverythingRunner
from napari_mobilesam.widget.interactive import DEBOUNCE_MS, InteractiveRunner
from napari_mobilesam.widget.layer_links import LayerLinks
from napari_mobilesam.widget.many_objects_runner import ManyObjectsRunner
from napari_mobilesam.widget.project_saving import ProjectSaving
from napari_mobilesam.widget.stack_runner import KEY_PROPAGATE, StackRunner
from napari_mobilesam.widget.status_line import StatusLine

# Viewer-level keys. None of them is a default key of napari's Points, Shapes, Labels or Image
# layers, whose keymaps would otherwise take precedence while such a layer is selected.
KEY_TOGGLE_POLARITY = "n"
KEY_NEXT_CANDIDATE = "j"
KEY_COMMIT = "k"
KEY_RESET = "Shift-R"
KEY_EACH_POINT = "Shift-O"

__all__ = ["DEBOUNCE_MS", "KEY_COMMIT", "KEY_PROPAGATE", "MobileSAMWidget"]


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
        loader: builds and keeps the predictor for the chosen weights and device.
        cache: embeddings of recently encoded planes.
        model_lock: held by whichever section runs a model step.
        status: the status and device lines, and the widget's notifications.
        interactive: the live preview and the commit.
        stack: the 3D section (propagate, precompute).
        everything: the "Segment everything" section.
        saving: the "Save to project" section (every write saved in a project folder).
    """

    interactive: InteractiveRunner | None = None  # the layer choices are listed before __init__

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        self.loader = PredictorLoader()
        self.cache = EmbeddingCache()
        self.model_lock = threading.Lock()
        self.status = StatusLine(self._status_label, self._device_label, self.loader)
        self.interactive = InteractiveRunner(
            self, self.native, self._scores_label, self._timing_label
        )
        self.links = LayerLinks(self)
        self._bound_keys: list[str] = []

        # Sections below the model settings, top to bottom: each panel (a FormSection) is one
        # add_section line here; finish_layout adds the Keys section and aligns all labels.
        self.stack = StackRunner(self)
        self.add_section(self.stack.panel)
        self.everything = EverythingRunner(self)
        self.add_section(self.everything.panel)
        self.many = ManyObjectsRunner(self)
        self.add_section(self.many.panel)
        self.saving = ProjectSaving(self.loader)
        self.add_section(self.saving.panel)
        self.finish_layout()

        self._watcher = CloseWatcher(self._teardown, self.native)
        self._connect_controls()
        self.links.connect_viewer()
        self._bind_keys()
        self.links.relink()

    # ------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        """Whether the widget was torn down."""
        return self._closed

    @property
    def objects(self) -> list[SegmentedObject]:
        """Objects of the last applied run, on the current plane."""
        return self.interactive.objects if self.interactive is not None else []

    @property
    def preview_layer(self) -> Labels | None:
        """The ``MobileSAM preview`` layer, once something was previewed."""
        return self.interactive.preview.layer if self.interactive is not None else None

    def _hidden_layer(self) -> Layer | None:
        return self.preview_layer

    @property
    def worker(self) -> GeneratorWorker | None:
        """The running interactive worker, if any."""
        return self.interactive.worker

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
        image = self.require_image()
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
        return self.interactive.segment()

    def commit(self) -> list[int]:
        """Write the current objects into the labels layer (one undo step); return the new ids.

        Segments first (synchronously) when the prompts changed since the last result. The
        used prompts are removed afterwards.
        """
        return self.interactive.commit()

    def segment_and_commit(self) -> list[int]:
        """Segment the current prompts and commit them; returns the new label ids."""
        self.interactive.segment()
        return self.interactive.commit_now()

    def propagate(self) -> list[int]:
        """Follow the current objects through the stack and write them; returns the new ids.

        Synchronous. Segments the current prompts first if needed; the walk axis and stop rules
        come from the widget's 3D section; the whole 3D result is one undo step.
        """
        return self.stack.propagate()

    def next_candidate(self) -> int | None:
        """Show the next of the current object's candidate masks; returns its index."""
        return self.interactive.shown.next_candidate()

    def toggle_point_polarity(self) -> bool:
        """Switch new points between positive and negative; returns True for positive."""
        self.new_points_positive = not self.new_points_positive
        return self.new_points_positive

    def toggle_each_point(self) -> bool:
        """Switch "one object per point" on or off; returns the new state."""
        self.each_point = not self.each_point
        return self.each_point

    def cancel(self) -> None:
        """Stop the running work and forget pending runs and commits."""
        self.stack.stop()
        self.everything.stop()
        self.many.stop()
        self.interactive.cancel()

    def reset(self) -> None:
        """Remove the prompts on the current plane and clear the preview."""
        self.stack.stop()
        self.everything.stop()
        self.interactive.reset()

    def close(self) -> None:
        """Unbind the widget's keys and stop its work, then close it."""
        self._teardown()
        super().close()

    # ------------------------------------------------------------------ for the sections
    def capture_request(self) -> SegmentRequest:
        """The plane on screen and its prompts, read now (main thread)."""
        return capture_request(
            self.viewer, self.require_image(), self.points_layer, self.shapes_layer
        )

    def require_image(self) -> Image:
        """The chosen image layer; ``ValueError`` when there is none."""
        image = self.image_layer
        if image is None:
            raise ValueError("Choose an image layer first (add one to the viewer).")
        return image

    def target_labels(self, image: Image) -> Labels:
        """The chosen Labels layer (one aligned to the image is created if none is), checked."""
        labels = self.labels_layer
        if labels is None:
            labels = create_aligned_labels(image)
            add_keeping_selection(self.viewer, labels)
            self.set_labels_layer(labels)
        check_target(labels, image)
        self.saving.attach(labels, image)  # saved before the write reports success
        return labels

    def current_objects(self) -> list[SegmentedObject]:
        """The previewed objects if they match the prompts on screen, else ``[]``."""
        return self.objects if self.interactive.objects_are_current() else []

    def finish_commit(self, message: str) -> None:
        """Report a write, then clear the preview and the prompts that made it."""
        self.interactive.finish_commit(message)

    def watch_window(self) -> None:
        """Tear down with the main window too (called when work starts; showing also does)."""
        self._watcher.watch_window()

    def interactive_started(self) -> None:
        self.stack.pause_for_interactive()

    def interactive_finished(self) -> None:
        self.stack.resume_after_interactive()

    # ------------------------------------------------------------------ wiring
    def _connect_controls(self) -> None:
        interactive = self.interactive
        for combo in (self._image_combo, self._points_combo, self._shapes_combo):
            combo.changed.connect(self.links.relink)
        self._make_prompts_button.changed.connect(self.create_prompt_layers)
        self._image_combo.changed.connect(lambda *_: self.saving.image_changed(self.image_layer))
        self._labels_combo.changed.connect(lambda *_: self.saving.labels_changed(self.labels_layer))
        self.saving.image_changed(self.image_layer)
        self._polarity_combo.changed.connect(self._on_polarity_choice)
        for control in (self._weights_edit, self._device_combo, self._runtime_combo):
            control.changed.connect(self._on_model_choice)
        self._live_check.changed.connect(lambda live: live and interactive.invalidate())
        self._multimask_check.changed.connect(interactive.invalidate)
        self._each_point_check.changed.connect(interactive.invalidate)
        self._segment_button.changed.connect(interactive.segment_clicked)
        self._commit_button.changed.connect(interactive.request_commit)
        self._cancel_button.changed.connect(self.cancel)
        self._reset_button.changed.connect(self.reset)

    def _bind_keys(self) -> None:
        actions: dict[str, Callable[[], Any]] = {
            KEY_TOGGLE_POLARITY: self.toggle_point_polarity,
            KEY_NEXT_CANDIDATE: self.next_candidate,
            KEY_COMMIT: self.interactive.request_commit,
            KEY_RESET: self.reset,
            KEY_PROPAGATE: self.stack.start_propagation,
            KEY_EACH_POINT: self.toggle_each_point,
        }
        for key, action in actions.items():

            def handler(viewer: napari.viewer.Viewer, action: Callable[[], Any] = action) -> None:
                action()

            self.viewer.bind_key(key, handler, overwrite=True)
            self._bound_keys.append(key)

    def _on_polarity_choice(self, *_: Any) -> None:
        points = self.points_layer
        if points is not None:
            set_new_points_positive(points, self.new_points_positive)

    def _on_model_choice(self, *_: Any) -> None:
        # Embeddings depend on the weights; the predictor is rebuilt on the next run.
        self.cache.clear()
        self.loader.forget_failures()  # picking a device again retries one that failed
        self.loader.runtime_choice = self.runtime
        self.status.device_unknown()
        self.interactive.invalidate()

    def _teardown(self) -> None:
        """Unbind keys, disconnect events, stop work and remove the preview (runs once)."""
        if self._closed:
            return
        self._closed = True
        self.status.closed = True
        self.stack.stop()
        self.everything.stop()
        self.many.close()
        self.interactive.teardown()
        self.saving.close()
        for key in self._bound_keys:
            self.viewer.bind_key(key, None)
        self._bound_keys.clear()
        self.links.disconnect()
        self.status.show_download(None)
