"""The widget's "Segment everything" work: automatic segmentation of the current plane or of the
whole stack, written into the chosen Labels layer as one undo step.

The run is a generator driven by a napari thread worker (one batch of prompts per step), with a
napari progress bar and Cancel; it shares the widget's predictor loader (weights, device, the
GPU-to-CPU fallback), model lock and embedding cache with clicks and 3D runs. The lock is held
per step, so clicks still run between two batches; the generator works on a predictor of its own
around the same model, so those clicks cannot swap its embedding. Layers are touched only on the
main thread: the plane and its normalisation are captured when the run starts, and the labels
are written when it returns. A cancelled run writes nothing. Errors are reported once, in the
status line and as a notification, never re-raised.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator
from functools import partial
from typing import TYPE_CHECKING, Any

from napari_mobilesam.engine.steps import drive
from napari_mobilesam.layers.everything_layers import (
    EverythingJob,
    EverythingResult,
    EverythingSettings,
    everything_steps,
    plan_job,
)
from napari_mobilesam.layers.label_image_writer import LabelImageReport, write_label_image
from napari_mobilesam.layers.labels_writer import LabelsError
from napari_mobilesam.layers.plane import PlaneError
from napari_mobilesam.widget.everything_panel import EverythingPanel
from napari_mobilesam.widget.worker_runner import WorkerRunner
from napari_mobilesam.widget.worker_steps import loaded_steps

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_mobilesam.engine.everything import EverythingProgress
    from napari_mobilesam.widget.host import WidgetHost

# The progress bar counts thousandths of the whole run (planes, tiles and prompts together).
BAR_STEPS = 1000


def default_generator(predictor: Any, settings: EverythingSettings) -> Any:
    """A ``SamAutomaticMaskGenerator`` on a predictor of its own around ``predictor``'s model
    (no second copy of the weights): it keeps its embedding between steps, whatever the
    widget's predictor is asked in between."""
    from napari_mobilesam.engine.automatic_mask_generator import SamAutomaticMaskGenerator

    twin = copy.copy(predictor)
    twin.reset_image()
    return SamAutomaticMaskGenerator(twin, **settings.generator_params())


def progress_text(item: EverythingProgress) -> str:
    """The status line during a run, e.g. "plane 3 (2/24), tile 1/4: 64/256 prompts"."""
    parts = []
    if item.plane is not None:
        parts.append(f"plane {item.plane} ({item.planes_done + 1}/{item.n_planes})")
    if item.n_tiles > 1:
        parts.append(f"tile {item.tile + 1}/{item.n_tiles}")
    where = ", ".join(parts)
    prompts = f"{item.prompts_done}/{item.prompts_total} prompts"
    return f"segment everything: {where + ': ' if where else ''}{prompts}"


def nothing_found_text(result: EverythingResult) -> str:
    """Why a run found no object, and what to change."""
    if result.labels and result.constant_planes == len(result.labels):
        return (
            "segment everything: the image is constant (one value everywhere with these contrast "
            "limits); there is nothing to segment. Nothing was written."
        )
    return (
        "segment everything found no objects: every mask was filtered out. Lower min IoU, "
        "stability or min size, or use more points per side. Nothing was written."
    )


def written_text(report: LabelImageReport, labels_name: str, n_planes: int) -> str:
    """The outcome of a written run."""
    if not report.ids:
        return (
            f"segment everything: all {report.found} object(s) lie on existing labels of "
            f"'{labels_name}' (protected); nothing was written."
        )
    ids = report.ids
    span = f"id {ids[0]}" if len(ids) == 1 else f"ids {ids[0]}-{ids[-1]}"
    text = f"segment everything: {len(ids)} object(s) written to '{labels_name}' ({span})"
    if n_planes > 1:
        text += f" over {n_planes} planes"
    if report.protected:
        text += f"; {report.protected} px kept (protected)"
    if report.skipped:
        text += f", {report.skipped} object(s) wholly on existing labels"
    return text + "."


class EverythingRunner(WorkerRunner):
    """Owns the "Segment everything" panel and its worker for one dock widget.

    Attributes:
        make_generator: ``(predictor, settings) -> generator`` builds the mask generator of a
            run (by default :func:`default_generator`); a stand-in can be put here.
        worker: the running worker, if any.
    """

    error_prefix = "segment everything: "

    def __init__(self, host: WidgetHost, expanded: bool = False) -> None:
        super().__init__(host)
        self.panel = EverythingPanel(expanded=expanded)
        self.make_generator: Callable[[Any, EverythingSettings], Any] = default_generator
        self.panel._run_button.changed.connect(self.start)
        self.panel._cancel_button.changed.connect(self.stop)

    # ------------------------------------------------------------------ the work
    def _job(self) -> tuple[Image, EverythingJob]:
        """The image and the planes to segment, captured now (main thread)."""
        image = self.host.require_image()
        return image, plan_job(self.host.capture_request(), self.panel.settings())

    def _steps(self, job: EverythingJob) -> Generator[Any, None, EverythingResult]:
        host = self.host

        def body(predictor: Any) -> Generator[EverythingProgress, None, EverythingResult]:
            generator = self.make_generator(predictor, job.settings)
            return everything_steps(job, generator, host.cache)

        return (yield from loaded_steps(host.loader, host.weights, host.device, host.cache, body))

    def run(self) -> LabelImageReport:
        """Segment everything now, in this thread, and write it (one undo step).

        Returns the write report (``ids`` is empty when nothing was found or written).

        Raises:
            ValueError: no image, no 2D plane on screen, settings out of range.
            LabelsError: the labels layer cannot take the result (nothing written).
        """
        image, job = self._job()
        self.stop()
        with self.host.model_lock:
            result = drive(self._steps(job))
        self.host.status.show_device()
        return self._write(image, job, result)

    def start(self, *_: Any) -> None:
        """Segment everything in a worker, with a progress bar; the result is written when it
        finishes (nothing if it is cancelled)."""
        status = self.host.status
        try:
            image, job = self._job()
        except (PlaneError, ValueError) as exc:
            status.set(f"segment everything: {exc}", outcome=True)
            status.warn(str(exc))
            return
        self.stop()
        self.panel.set_running(True)
        status.set("segment everything: starting...")
        self.launch(
            self._steps(job),
            partial(self._on_returned, image, job),
            bar=(BAR_STEPS, "MobileSAM: segment everything"),
        )

    def stop(self, *_: Any) -> bool:
        """Cancel a running segmentation; nothing is written."""
        stopped = super().stop()
        if stopped and not self.host.closed:
            message = "segment everything cancelled; nothing was written"
            self.host.status.set(message, outcome=True)
        return stopped

    # ------------------------------------------------------------------ worker callbacks
    def on_step(self, item: EverythingProgress) -> None:
        # The status first: updating napari's progress bar may deliver the next steps before
        # it returns (nested), and those must not be overwritten by this older one afterwards.
        self.host.status.set(progress_text(item))
        self.advance_bar(int(BAR_STEPS * item.fraction))

    def _on_returned(self, image: Image, job: EverythingJob, result: EverythingResult) -> None:
        if self.cancelled or self.host.closed:
            return
        try:
            self._write(image, job, result)
        except (LabelsError, PlaneError, ValueError) as exc:
            self.host.status.warn(str(exc))
            self.host.status.set(f"segment everything: not written: {exc}", outcome=True)

    def _write(
        self, image: Image, job: EverythingJob, result: EverythingResult
    ) -> LabelImageReport:
        host = self.host
        if host.image_layer is not image:
            raise ValueError(
                f"the image layer changed from '{image.name}' while segmenting; nothing was "
                "written. Run it again on the image you want."
            )
        if result.n_objects == 0:
            message = nothing_found_text(result)
            host.status.set(message, outcome=True)
            host.status.info(message)
            return LabelImageReport()
        labels = host.target_labels(image)
        report = write_label_image(labels, result.labels, host.protect)
        message = written_text(report, labels.name, len(job.planes))
        host.status.set(message, outcome=True)
        host.status.info(message)
        return report

    def on_finished(self) -> None:
        self.panel.set_running(False)
