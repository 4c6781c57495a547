"""The objects of the last applied run on the current plane: kept, drawn in the preview layer,
their candidate scores shown, the candidate key cycling the active one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import Label

from napari_mobilesam.layers.layer_prompts import PlanePrompts
from napari_mobilesam.layers.point_objects_layers import resolved_masks
from napari_mobilesam.layers.preview_layer import PreviewManager
from napari_mobilesam.layers.segment import SegmentedObject, SegmentRequest, SegmentResult
from napari_mobilesam.widget import status_text

if TYPE_CHECKING:
    from napari_mobilesam.widget.host import WidgetHost


class PreviewObjects:
    """What the interactive section shows of its last applied run.

    Attributes:
        objects: one per prompt group, on the plane of the run.
        generation: the interactive generation they were made at (-1: none).
        prompts: the prompts that made them (removed when they are committed).
        active: the index of the object the candidate key acts on.
        manager: the ``MobileSAM preview`` layer's manager.
    """

    def __init__(self, host: WidgetHost, scores: Label) -> None:
        self.host = host
        self.manager = PreviewManager(host.viewer)
        self._scores = scores
        self.objects: list[SegmentedObject] = []
        self.generation = -1
        self.prompts: PlanePrompts | None = None
        self.active = 0

    def show(self, generation: int, request: SegmentRequest, result: SegmentResult) -> None:
        """Keep and draw ``result``, made from ``request`` at ``generation``."""
        earlier = self.objects
        self.objects = list(result.objects)
        self.generation = generation
        self.prompts = request.prompts
        # The object whose prompts just changed is the one the candidate key acts on.
        decoded = [
            i
            for i, obj in enumerate(self.objects)
            if not any(obj.masks is old.masks for old in earlier)
        ]
        if decoded:
            self.active = decoded[-1]
        self.active = min(self.active, max(len(self.objects) - 1, 0))
        self.draw()

    def next_candidate(self) -> int | None:
        """Show the next of the active object's candidate masks; returns its index."""
        if not self.objects:
            return None
        chosen = self.objects[min(self.active, len(self.objects) - 1)].cycle()
        self.draw()
        return chosen

    def draw(self) -> None:
        """The objects into the preview layer, their scores into the read-out."""
        image = self.host.image_layer
        self._scores.value = status_text.candidate_scores(self.objects, self.active)
        if not self.objects or image is None:
            self.manager.clear()
            return
        if self.host.each_point:  # overlaps shown as they will be committed
            masks = resolved_masks(self.objects)
        else:
            masks = [obj.mask for obj in self.objects]
        self.manager.show(image, self.objects[0].plane, masks)

    def forget(self) -> None:
        """Drop the objects (another image, or a commit used them)."""
        self.objects = []
        self.generation = -1
        self.prompts = None
        self.active = 0
        self.manager.clear()
        self._scores.value = "-"
