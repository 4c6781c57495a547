"""The life of one section's thread worker: start, progress, cancel, error, finish.

Every section of the dock widget that runs the model (the interactive preview, the 3D section,
"Segment everything") drives a generator of steps in a napari thread worker. The steps run one
at a time under the widget's model lock (:func:`locked_steps`), so sections take turns between
two steps. :class:`WorkerRunner` holds what they share: the worker and its signals, the model
loading steps (weights download, device line), an optional napari progress bar, Cancel, and
errors reported once (never re-raised into the Qt event loop). A section subclasses it and
says what a step shows (:meth:`WorkerRunner.on_step`) and what the result does.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress

from napari_mobilesam.layers.segment import Progress
from napari_mobilesam.widget.host import WidgetHost
from napari_mobilesam.widget.worker_steps import locked_steps


def load_status(progress: Progress) -> str | None:
    """The status line while the model loads (``None``: nothing to say)."""
    if progress.stage == "download" and progress.fraction is not None:
        return f"downloading weights: {100 * progress.fraction:.0f}%"
    if progress.stage == "model":
        return "model loaded"
    return None


class WorkerRunner:
    """One worker at a time for one section of the dock widget.

    Subclasses override :meth:`on_step` (a step of their own work), and may override
    :meth:`on_load` (a model-loading step), :meth:`on_finished` and :attr:`error_prefix`.

    Attributes:
        host: the dock widget.
        worker: the running worker, if any.
        cancelled: whether the running worker was asked to stop (its late steps are ignored).
    """

    # Put before "error: ..." in the status line, to say which section failed.
    error_prefix = ""

    def __init__(self, host: WidgetHost) -> None:
        self.host = host
        self.worker: GeneratorWorker | None = None
        self.cancelled = False
        self._bar: Any = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def launch(
        self,
        steps: Generator[Any, None, Any],
        on_returned: Callable[[Any], None],
        bar: tuple[int, str] | None = None,
    ) -> GeneratorWorker:
        """Drive ``steps`` in a new worker; ``on_returned`` gets the result on the main thread.

        ``bar`` is ``(total, description)`` for a napari progress bar, advanced by
        :meth:`advance_bar`.
        """
        host = self.host
        # Errors are reported by _on_error only: not re-raised into the Qt event loop.
        worker = create_worker(
            locked_steps, host.model_lock, steps, _start_thread=False, _ignore_errors=True
        )
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(on_returned)
        worker.errored.connect(self._on_error)
        worker.warned.connect(host.status.worker_warning)
        worker.finished.connect(partial(self._on_finished, worker))
        self.worker, self.cancelled = worker, False
        if bar is not None:
            self._bar = napari_progress(total=max(1, bar[0]), desc=bar[1])
        host.watch_window()
        worker.start()
        return worker

    def stop(self) -> bool:
        """Ask the running worker to stop at its next step; returns whether one was running."""
        if self.worker is None:
            return False
        self.cancelled = True
        self.worker.quit()
        if self.host.closed:
            self.close_bar()
        return True

    # ------------------------------------------------------------------ hooks
    def on_step(self, item: Any) -> None:
        """A step of the section's own work finished (main thread)."""

    def on_load(self, progress: Progress) -> None:
        """A model-loading step: the download's progress, then the device line."""
        host = self.host
        if progress.stage == "model":
            host.status.show_device()
        elif progress.stage == "download" and progress.fraction is not None:
            host.status.show_download(progress.fraction)
            host.status.set(load_status(progress) or "")

    def on_error(self, exc: Exception) -> None:
        """The worker failed (reported already) and the widget is still open."""

    def on_finished(self) -> None:
        """The worker finished (done, cancelled or failed) and the widget is still open."""

    # ------------------------------------------------------------------ progress bar
    def advance_bar(self, done: int) -> None:
        """Move the progress bar to ``done`` (never back)."""
        if self._bar is not None and done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ worker signals
    def _on_yielded(self, item: Any) -> None:
        if self.cancelled or self.host.closed:
            return  # a step that finished after Cancel: keep "cancelled" on screen
        if isinstance(item, Progress):
            self.on_load(item)
        else:
            self.on_step(item)

    def _on_error(self, exc: Exception) -> None:
        self.host.status.show_download(None)
        if not self.host.closed:
            self.host.status.error(exc, self.error_prefix)
            self.on_error(exc)

    def _on_finished(self, worker: GeneratorWorker) -> None:
        self.host.status.show_download(None)
        if worker is not self.worker:
            return
        self.worker = None
        self.close_bar()
        if not self.host.closed:
            self.host.status.show_device()
            self.on_finished()
