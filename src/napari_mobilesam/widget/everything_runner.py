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
from typing import TYPE_CHECKING, Any, Protocol

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning

from napari_mobilesam.engine.propagation import drive
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
from napari_mobilesam.widget.worker_steps import loaded_steps, locked_steps

if TYPE_CHECKING:
    import threading

    import napari
    from napari.layers import Image, Labels

    from napari_mobilesam.engine.embedding_cache import EmbeddingCache
    from napari_mobilesam.engine.everything import EverythingProgress
    from napari_mobilesam.engine.predictor_loader import PredictorLoader
    from napari_mobilesam.layers.segment import SegmentRequest

# The progress bar counts thousandths of the whole run (planes, tiles and prompts together).
BAR_STEPS = 1000


class EverythingHost(Protocol):
    """What the runner uses of the dock widget (``MobileSAMWidget`` provides it)."""

    viewer: napari.viewer.Viewer
    loader: PredictorLoader
    cache: EmbeddingCache
    weights: Any
    device: str
    protect: bool
    image_layer: Image | None
    _model_lock: threading.Lock
    _generation: int
    _closed: bool

    def _capture_request(self) -> SegmentRequest: ...
    def _require_image(self) -> Image: ...
    def _target_labels(self, image: Image) -> Labels: ...
    def _set_status(self, text: str, outcome: bool = False) -> None: ...
    def _watch_window(self) -> None: ...
    def _show_download(self, fraction: float | None) -> None: ...
    def _on_warned(self, show_warning_args: tuple) -> None: ...
    def _on_progress(self, generation: int, progress: Any) -> None: ...


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


class EverythingRunner:
    """Owns the "Segment everything" panel and its worker for one dock widget.

    Attributes:
        make_generator: ``(predictor, settings) -> generator`` builds the mask generator of a
            run (by default :func:`default_generator`); a stand-in can be put here.
        worker: the running worker, if any.
    """

    def __init__(self, widget: EverythingHost, expanded: bool = False) -> None:
        self.widget = widget
        self.panel = EverythingPanel(expanded=expanded)
        self.make_generator: Callable[[Any, EverythingSettings], Any] = default_generator
        self.worker: GeneratorWorker | None = None
        self._cancelled = False
        self._bar: Any = None
        self.panel._run_button.changed.connect(self.start)
        self.panel._cancel_button.changed.connect(self.stop)

    # ------------------------------------------------------------------ the work
    def _job(self) -> tuple[Image, EverythingJob]:
        """The image and the planes to segment, captured now (main thread)."""
        image = self.widget._require_image()
        return image, plan_job(self.widget._capture_request(), self.panel.settings())

    def _steps(self, job: EverythingJob) -> Generator[Any, None, EverythingResult]:
        widget = self.widget

        def body(predictor: Any) -> Generator[EverythingProgress, None, EverythingResult]:
            generator = self.make_generator(predictor, job.settings)
            return everything_steps(job, generator, widget.cache)

        return (
            yield from loaded_steps(
                widget.loader, widget.weights, widget.device, widget.cache, body
            )
        )

    def run(self) -> LabelImageReport:
        """Segment everything now, in this thread, and write it (one undo step).

        Returns the write report (``ids`` is empty when nothing was found or written).

        Raises:
            ValueError: no image, no 2D plane on screen, settings out of range.
            LabelsError: the labels layer cannot take the result (nothing written).
        """
        image, job = self._job()
        self.stop()
        with self.widget._model_lock:
            result = drive(self._steps(job))
        return self._write(image, job, result)

    def start(self, *_: Any) -> None:
        """Segment everything in a worker, with a progress bar; the result is written when it
        finishes (nothing if it is cancelled)."""
        widget = self.widget
        try:
            image, job = self._job()
        except (PlaneError, ValueError) as exc:
            widget._set_status(f"segment everything: {exc}", outcome=True)
            show_warning(f"MobileSAM: {exc}")
            return
        self.stop()
        # Errors are reported by _on_error only: not re-raised into the Qt event loop.
        worker = create_worker(
            locked_steps, widget._model_lock, self._steps(job), _start_thread=False,
            _ignore_errors=True,
        )  # fmt: skip
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(partial(self._on_returned, image, job))
        worker.errored.connect(self._on_error)
        worker.warned.connect(widget._on_warned)
        worker.finished.connect(partial(self._on_finished, worker))
        self.worker, self._cancelled = worker, False
        self._bar = napari_progress(total=BAR_STEPS, desc="MobileSAM: segment everything")
        self.panel.set_running(True)
        widget._set_status("segment everything: starting...")
        widget._watch_window()
        worker.start()

    def stop(self, *_: Any) -> None:
        """Cancel a running segmentation; nothing is written."""
        if self.worker is None:
            return
        self._cancelled = True
        self.worker.quit()
        if self.widget._closed:
            self._close_bar()
        else:
            message = "segment everything cancelled; nothing was written"
            self.widget._set_status(message, outcome=True)

    # ------------------------------------------------------------------ worker callbacks
    def _on_progress(self, item: Any) -> None:
        if self._cancelled or self.widget._closed:
            return  # a step that finished after Cancel: keep "cancelled" on screen
        if hasattr(item, "stage"):  # loading the model: the download shows in the widget
            if item.stage == "download":
                self.widget._on_progress(self.widget._generation, item)
            return
        # The status first: updating napari's progress bar may deliver the next steps before
        # it returns (nested), and those must not be overwritten by this older one afterwards.
        self.widget._set_status(progress_text(item))
        if self._bar is not None:
            ahead = int(BAR_STEPS * item.fraction) - self._bar.n
            if ahead > 0:
                self._bar.update(ahead)

    def _on_returned(self, image: Image, job: EverythingJob, result: EverythingResult) -> None:
        if self._cancelled or self.widget._closed:
            return
        try:
            self._write(image, job, result)
        except (LabelsError, PlaneError, ValueError) as exc:
            show_warning(f"MobileSAM: {exc}")
            self.widget._set_status(f"segment everything: not written: {exc}", outcome=True)

    def _write(
        self, image: Image, job: EverythingJob, result: EverythingResult
    ) -> LabelImageReport:
        widget = self.widget
        if widget.image_layer is not image:
            raise ValueError(
                f"the image layer changed from '{image.name}' while segmenting; nothing was "
                "written. Run it again on the image you want."
            )
        if result.n_objects == 0:
            message = nothing_found_text(result)
            widget._set_status(message, outcome=True)
            show_info(f"MobileSAM: {message}")
            return LabelImageReport()
        labels = widget._target_labels(image)
        report = write_label_image(labels, result.labels, widget.protect)
        message = written_text(report, labels.name, len(job.planes))
        widget._set_status(message, outcome=True)
        show_info(f"MobileSAM: {message}")
        return report

    def _on_error(self, exc: Exception) -> None:
        if self.widget._closed:
            return
        self.widget._set_status(f"segment everything: error: {exc}", outcome=True)
        show_error(f"MobileSAM: {exc}")

    def _on_finished(self, worker: GeneratorWorker) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        self._close_bar()
        if self.widget._closed:
            return
        self.panel.set_running(False)
        self.widget._show_download(None)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
