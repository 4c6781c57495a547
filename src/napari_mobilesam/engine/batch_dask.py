"""The dask.distributed side of :mod:`~napari_mobilesam.engine.batch` (imported only when a run
uses dask): the worker plugin that prepares every worker, also those that replace a dead one."""

from __future__ import annotations

import signal

from distributed import WorkerPlugin

from napari_mobilesam.engine.batch import ModelSpec, warm_up


class ModelSetup(WorkerPlugin):
    """Prepare a worker before its first task: torch's threads and the model, built once.

    Arguments:
      spec: the model to build.
      ignore_interrupt: ignore Ctrl+C in the worker (workers of a ``local:N`` cluster share the
        terminal's process group): the client stops the run and shuts the workers down itself,
        without each worker printing a traceback.
    """

    name = "napari-mobilesam-model"

    def __init__(self, spec: ModelSpec, ignore_interrupt: bool) -> None:
        self.spec = spec
        self.ignore_interrupt = ignore_interrupt

    def setup(self, worker) -> None:
        if self.ignore_interrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        warm_up(self.spec)
