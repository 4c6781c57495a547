"""The dock widget's links to the viewer: the events of the viewer and of the chosen layers.

A change of the chosen image, points or boxes, of their data, of the image's contrast limits or
of the plane on screen makes the preview stale (a new run follows); a removed layer frees its
embeddings; another image retargets the labels choice and shows the 3D section for a stack.
Every connection made here is undone by :meth:`LayerLinks.disconnect`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from napari.layers import Image, Labels, Points, Shapes

from napari_mobilesam.layers.labels_writer import LabelsError, check_target
from napari_mobilesam.layers.prompt_layer_setup import new_points_positive
from napari_mobilesam.layers.segment import normalisation_key
from napari_mobilesam.widget.host import WidgetHost

if TYPE_CHECKING:
    from napari_mobilesam.widget.interactive import InteractiveRunner
    from napari_mobilesam.widget.stack_runner import StackRunner

# A prompt edit in progress (a drag); the finished edit follows as one more event.
_UNFINISHED_ACTIONS = {"adding", "removing", "changing"}


class LinkedWidget(WidgetHost, Protocol):
    """What the links use of the dock widget beyond a section's view of it."""

    interactive: InteractiveRunner
    stack: StackRunner
    new_points_positive: bool

    @property
    def labels_layer(self) -> Labels | None: ...
    @property
    def preview_layer(self) -> Labels | None: ...
    def set_labels_layer(self, layer: Labels | None) -> None: ...
    def reset_choices(self, *_: Any) -> None: ...


class LayerLinks:
    """Follows the viewer's and the chosen layers' events for one dock widget."""

    def __init__(self, widget: LinkedWidget) -> None:
        self.widget = widget
        self._viewer_connections: list[tuple[Any, Callable]] = []
        self._layer_connections: list[tuple[Any, Callable]] = []
        self._linked_image: Image | None = None

    def _watch(self, store: list[tuple[Any, Callable]], emitter: Any, callback: Callable) -> None:
        emitter.connect(callback)
        store.append((emitter, callback))

    @staticmethod
    def _unwatch(store: list[tuple[Any, Callable]]) -> None:
        for emitter, callback in store:
            emitter.disconnect(callback)
        store.clear()

    def connect_viewer(self) -> None:
        widget = self.widget
        layers = widget.viewer.layers.events
        for emitter in (layers.inserted, layers.removed, layers.moved, layers.reordered):
            self._watch(self._viewer_connections, emitter, widget.reset_choices)
        self._watch(self._viewer_connections, layers.removed, self._on_layer_removed)
        dims = widget.viewer.dims.events
        invalidate = widget.interactive.invalidate
        for emitter in (dims.point, dims.ndisplay, dims.order):
            self._watch(self._viewer_connections, emitter, invalidate)
        for emitter in (dims.ndisplay, dims.order):
            self._watch(self._viewer_connections, emitter, widget.stack.refresh_axes)

    def disconnect(self) -> None:
        self._unwatch(self._viewer_connections)
        self._unwatch(self._layer_connections)

    def relink(self, *_: Any) -> None:
        """Follow the chosen layers' events (called whenever a layer choice changes)."""
        widget = self.widget
        if widget.closed:
            return
        self._unwatch(self._layer_connections)

        def watch(emitter: Any, callback: Callable) -> None:
            self._watch(self._layer_connections, emitter, callback)

        image, points, shapes = widget.image_layer, widget.points_layer, widget.shapes_layer
        if image is not None:
            watch(image.events.data, self._on_image_data)
            watch(image.events.contrast_limits, self._on_contrast)
        for layer in (points, shapes):
            if layer is not None:
                watch(layer.events.data, self._on_prompt_event)
        if points is not None:
            watch(points.events.features, self._on_prompt_event)
            # napari changes the defaults too: selecting a point makes new points copy it.
            watch(points.events.feature_defaults, self._on_points_defaults)
            self._on_points_defaults()
        if image is not self._linked_image:
            self._linked_image = image
            self._retarget_labels(image)
            widget.stack.image_changed(image)
        if image is None or widget.interactive.preview.image_id != str(image.unique_id):
            widget.interactive.shown.forget()
        widget.stack.refresh_axes()
        widget.interactive.invalidate()

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

        widget = self.widget
        current = widget.labels_layer
        if current is not None and fits(current):
            return
        hidden = widget.preview_layer
        candidates = [
            layer
            for layer in widget.viewer.layers
            if isinstance(layer, Labels) and layer is not hidden
        ]
        candidates.sort(key=lambda layer: layer.name != f"{image.name} labels")
        widget.set_labels_layer(next((layer for layer in candidates if fits(layer)), None))

    def _on_layer_removed(self, event: Any) -> None:
        widget = self.widget
        layer = event.value
        widget.cache.invalidate_layer(str(layer.unique_id))
        widget.interactive.preview.layer_removed(layer)
        if isinstance(layer, (Image, Points, Shapes)):
            # The layer choice may not emit a change when its last layer goes, so a run in
            # flight for the removed layer must be made stale here.
            self.relink()

    def _on_points_defaults(self, event: Any = None) -> None:
        """Show the polarity the points layer gives new points."""
        points = self.widget.points_layer
        if points is not None:
            self.widget.new_points_positive = new_points_positive(points)

    def _on_image_data(self, event: Any = None) -> None:
        image = self.widget.image_layer
        if image is not None:
            self.widget.cache.invalidate_layer(str(image.unique_id))
        self.widget.interactive.invalidate()

    def _on_contrast(self, event: Any = None) -> None:
        # Embeddings made with other limits will not be asked for again; free their memory.
        image = self.widget.image_layer
        if image is not None:
            self.widget.cache.retain_normalisation(str(image.unique_id), normalisation_key(image))
        self.widget.interactive.invalidate()

    def _on_prompt_event(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if str(getattr(action, "value", action)) in _UNFINISHED_ACTIONS:
            return
        # A finished edit (a click, a drawn box, the end of a drag) is one event: run at once
        # instead of waiting out the debounce, which is there for slider scrubbing.
        self.widget.interactive.invalidate(delay_ms=0)
