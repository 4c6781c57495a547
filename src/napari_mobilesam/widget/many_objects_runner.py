"""The widget's "Many objects" work: refine from a Labels layer, and find seeds.

Refine runs in a napari thread worker (one batch of objects per step) with a progress bar and
Cancel, under the widget's model lock and with its predictor loader and embedding cache, like
"Segment everything". The planes and a copy of their source labels are captured on the main
thread when it starts; the result is written when it returns, into the widget's labels layer, as
one undo step. The source layer is only read; choosing it as the target is refused. A cancelled
or failed run writes nothing.

Find seeds runs the blob detector on the plane on screen and puts the seeds into a Points layer
(``MobileSAM seeds``), which becomes the widget's points layer with "one object per point" on,
so the seeds are segmented as soon as they are there, and can be edited first or after.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import TYPE_CHECKING, Any

from napari.layers import Labels

from napari_mobilesam.engine.refine import RefineProgress
from napari_mobilesam.engine.steps import drive
from napari_mobilesam.layers.labels_writer import LabelsError
from napari_mobilesam.layers.plane import PlaneError
from napari_mobilesam.layers.preview_layer import add_keeping_selection
from napari_mobilesam.layers.refine_layers import (
    RefinedPlanes,
    RefineRequest,
    capture_refine,
    refine_steps,
    write_refined,
)
from napari_mobilesam.layers.seed_layers import SEEDS_NAME, find_plane_seeds, seeds_layer, set_seeds
from napari_mobilesam.widget.many_objects_panel import ManyObjectsPanel
from napari_mobilesam.widget.worker_runner import WorkerRunner
from napari_mobilesam.widget.worker_steps import loaded_steps

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_mobilesam.widget.host import WidgetHost

BAR_STEPS = 1000


def refine_text(item: RefineProgress) -> str:
    """The status line during a refinement."""
    where = f"plane {item.planes_done + 1}/{item.n_planes}, " if item.n_planes > 1 else ""
    return f"refine: {where}{item.objects_done}/{item.objects_total} labels"


class ManyObjectsRunner(WorkerRunner):
    """Owns the "Many objects" panel and its worker for one dock widget."""

    error_prefix = "refine: "

    def __init__(self, host: WidgetHost, expanded: bool = False) -> None:
        super().__init__(host)
        self.panel = ManyObjectsPanel(self._labels_choices, expanded=expanded)
        self.panel._refine_button.changed.connect(self.start_refine)
        self.panel._cancel_button.changed.connect(self.stop)
        self.panel._seeds_button.changed.connect(self.find_seeds)
        events = host.viewer.layers.events
        self._events = (events.inserted, events.removed, events.reordered)
        for emitter in self._events:
            emitter.connect(self.panel.reset_choices)

    def _labels_choices(self, _widget: Any) -> list[tuple[str, Labels]]:
        preview = getattr(self.host, "preview_layer", None)
        return [
            (layer.name, layer)
            for layer in self.host.viewer.layers
            if isinstance(layer, Labels) and layer is not preview
        ]

    def close(self) -> None:
        self.stop()
        for emitter in self._events:
            emitter.disconnect(self.panel.reset_choices)

    # ------------------------------------------------------------------ refine
    def _capture(self) -> tuple[Image, Labels, RefineRequest]:
        image = self.host.require_image()
        source = self.panel.source
        if source is None:
            raise ValueError("Choose the Labels layer to refine (the 'source' choice).")
        if source is self.host.labels_layer:
            raise LabelsError(
                f"'{source.name}' is both the source and the target; the source is never "
                "modified: choose another labels layer (or 'create new') as the target."
            )
        request = capture_refine(self.host.viewer, image, source, self.panel.whole_stack)
        return image, source, request

    def _steps(self, request: RefineRequest) -> Generator[Any, None, RefinedPlanes]:
        host, panel = self.host, self.panel

        def body(predictor: Any) -> Generator[RefineProgress, None, RefinedPlanes]:
            return refine_steps(request, predictor, host.cache, mask_prompt=panel.mask_prompt)

        return (yield from loaded_steps(host.loader, host.weights, host.device, host.cache, body))

    def refine(self) -> list[int]:
        """Refine now, in this thread, and write (one undo step); returns the ids written."""
        image, source, request = self._capture()
        self.stop()
        with self.host.model_lock:
            result = drive(self._steps(request))
        return self._write(image, source, result)

    def start_refine(self, *_: Any) -> None:
        """Refine in a worker with a progress bar; written when it returns."""
        status = self.host.status
        try:
            image, source, request = self._capture()
        except (PlaneError, ValueError) as exc:
            status.set(f"refine: {exc}", outcome=True)
            status.warn(str(exc))
            return
        self.stop()
        self.panel.set_running(True)
        status.set("refine: starting...")
        self.launch(
            self._steps(request),
            partial(self._on_returned, image, source),
            bar=(BAR_STEPS, "MobileSAM: refine from labels"),
        )

    def stop(self, *_: Any) -> bool:
        stopped = super().stop()
        if stopped and not self.host.closed:
            self.host.status.set("refine cancelled; nothing was written", outcome=True)
        return stopped

    def on_step(self, item: RefineProgress) -> None:
        self.host.status.set(refine_text(item))
        self.advance_bar(int(BAR_STEPS * item.fraction))

    def on_finished(self) -> None:
        self.panel.set_running(False)

    def _on_returned(self, image: Image, source: Labels, result: RefinedPlanes) -> None:
        if self.cancelled or self.host.closed:
            return
        try:
            self._write(image, source, result)
        except (LabelsError, PlaneError, ValueError) as exc:
            self.host.status.warn(str(exc))
            self.host.status.set(f"refine: not written: {exc}", outcome=True)

    def _write(self, image: Image, source: Labels, result: RefinedPlanes) -> list[int]:
        host = self.host
        if host.image_layer is not image:
            raise ValueError(
                f"the image layer changed from '{image.name}' while refining; nothing was written."
            )
        target = host.target_labels(image)
        report = write_refined(target, result, self.panel.keep_ids, source=source, image=image)
        message = (
            f"refine: {len(report.ids)} of {result.objects} label(s) of '{source.name}' written "
            f"to '{target.name}'"
        )
        if result.lost:
            message += f"; {len(result.lost)} came out empty (or lost every pixel to overlaps)"
        if report.protected:
            message += f"; {report.protected} px kept (protected)"
        host.status.set(message + ".", outcome=True)
        host.status.info(message + ".")
        return report.ids

    # ------------------------------------------------------------------ seeds
    def find_seeds(self, *_: Any) -> Any:
        """Seeds of the plane on screen into the ``MobileSAM seeds`` Points layer, which becomes
        the prompt layer with one object per point; returns that layer (None on an error)."""
        host = self.host
        diameter, threshold, dark = self.panel.seed_settings()
        try:
            image = host.require_image()
            seeds = find_plane_seeds(host.viewer, image, diameter, threshold, dark)
        except (PlaneError, ValueError) as exc:
            host.status.set(f"find seeds: {exc}", outcome=True)
            host.status.warn(str(exc))
            return None
        layer = next(
            (
                lay
                for lay in host.viewer.layers
                if lay.name == SEEDS_NAME and lay.ndim == image.ndim
            ),
            None,
        )
        if layer is None:
            layer = seeds_layer(image, seeds)
            add_keeping_selection(host.viewer, layer)
        else:
            set_seeds(layer, seeds)
        host.each_point = True
        host.set_prompt_layers(layer, host.shapes_layer)
        host.status.set(
            f"find seeds: {len(seeds)} seed(s) in '{layer.name}'; edit them, they are segmented "
            "as one object per point.",
            outcome=True,
        )
        return layer
