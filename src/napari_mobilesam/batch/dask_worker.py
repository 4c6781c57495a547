"""The dask.distributed side of :mod:`~napari_mobilesam.batch.tasks` (imported only when a run
uses dask): the worker plugin that prepares every worker, also those that replace a dead one.

It imports nothing of the package (``tasks`` imports it), so the two never form a cycle: the
preparation itself is handed in as a function.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from distributed import WorkerPlugin


class ModelSetup(WorkerPlugin):
    """Prepare a worker before its first task by calling ``prepare(spec)`` there.

    Arguments:
      prepare: a module-level function (pickled by reference), e.g. ``tasks.warm_up``, which
        sets torch's threads and builds the model once.
      spec: its argument, a ``tasks.ModelSpec``.
      ignore_interrupt: ignore Ctrl+C in the worker (workers of a ``local:N`` cluster share the
        terminal's process group): the client stops the run and shuts the workers down itself,
        without each worker printing a traceback.
    """

    name = "napari-mobilesam-model"

    def __init__(self, prepare: Callable[[Any], Any], spec: Any, ignore_interrupt: bool) -> None:
        self.prepare = prepare
        self.spec = spec
        self.ignore_interrupt = ignore_interrupt

    def setup(self, worker: Any) -> None:
        if self.ignore_interrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.prepare(self.spec)
