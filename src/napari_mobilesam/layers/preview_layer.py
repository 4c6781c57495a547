"""The ``MobileSAM preview`` Labels layer: the current plane's candidate objects, not yet kept.

The preview is scratch space, so it is written directly (no undo history): committing writes the
real Labels layer with undo. Only one plane is drawn at a time; drawing another plane first
clears the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Labels, Layer

from napari_mobilesam.layers.labels_writer import create_aligned_labels
from napari_mobilesam.layers.plane import PlaneRef, spatial_shape

PREVIEW_NAME = "MobileSAM preview"


def make_preview_layer(image: Layer) -> Labels:
    """An empty preview layer on the image's grid, half transparent so the image shows through."""
    layer = create_aligned_labels(image, name=PREVIEW_NAME, dtype=np.uint16)
    layer.opacity = 0.5
    layer.editable = False
    return layer


def fits(preview: Labels, image: Layer) -> bool:
    """Whether ``preview`` still has the image's spatial shape (the image data may change)."""
    return tuple(preview.data.shape) == spatial_shape(image)


class PreviewPainter:
    """Draws masks of one plane into a preview layer, erasing the plane drawn before."""

    def __init__(self) -> None:
        self._drawn: PlaneRef | None = None

    def clear(self, preview: Labels | None) -> None:
        """Erase what was drawn last."""
        if preview is not None and self._drawn is not None:
            preview.data[self._drawn.data_index] = 0
            preview.refresh()
        self._drawn = None

    def draw(self, preview: Labels, plane: PlaneRef, masks: Sequence[np.ndarray]) -> None:
        """Show ``masks`` (each (H, W) bool in screen order) on ``plane`` as labels 1, 2, ..."""
        if self._drawn is not None:
            preview.data[self._drawn.data_index] = 0
        values = np.zeros(plane.shape, dtype=preview.data.dtype)
        # Where objects overlap the later one shows here; committing with protection keeps the
        # earlier one's pixels instead.
        for value, mask in enumerate(masks, start=1):
            values[mask] = value
        target = plane.orient(values)
        preview.data[plane.data_index] = target
        self._drawn = plane
        preview.refresh()


def add_keeping_selection(viewer: Any, layer: Layer, index: int | None = None) -> None:
    """Add ``layer`` to the viewer without taking the selection from the current layer.

    napari selects a layer when it is added; the user's next click must still go to the prompt
    layer they were using.
    """
    active = viewer.layers.selection.active
    if index is None:
        viewer.add_layer(layer)
    else:
        viewer.layers.insert(index, layer)
    if active is not None:
        viewer.layers.selection.active = active


class PreviewManager:
    """The preview layer of one viewer: made on first use just above the image, redrawn per run.

    A new layer replaces it when the image changes (other grid or shape); it goes away with its
    image.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.layer: Labels | None = None
        self.image_id: str | None = None
        self._painter = PreviewPainter()

    def show(self, image: Layer, plane: PlaneRef, masks: Sequence[np.ndarray]) -> None:
        """Draw ``masks`` on ``plane`` of ``image``'s preview (erasing the last drawn plane)."""
        layer = self._layer_for(image)  # first: a new layer comes with a new painter
        self._painter.draw(layer, plane, masks)

    def clear(self) -> None:
        """Erase what was drawn last."""
        self._painter.clear(self.layer)

    def layer_removed(self, layer: Layer) -> None:
        """Follow a layer leaving the viewer: forget the preview, or drop it with its image."""
        if layer is self.layer:
            self.layer = None
            self._painter = PreviewPainter()
        elif str(layer.unique_id) == self.image_id:
            self.remove()

    def remove(self) -> None:
        """Take the preview layer out of the viewer."""
        layer, self.layer = self.layer, None
        self._painter = PreviewPainter()
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _layer_for(self, image: Layer) -> Labels:
        layer = self.layer
        if (
            layer is not None
            and layer in self.viewer.layers
            and self.image_id == str(image.unique_id)
            and fits(layer, image)
        ):
            return layer
        self.remove()
        layer = make_preview_layer(image)
        self.layer = layer
        self.image_id = str(image.unique_id)
        add_keeping_selection(self.viewer, layer, self.viewer.layers.index(image) + 1)
        return layer
