"""Ctrl+C tests without timing: the command line in a subprocess whose tasks wait at a gate.

``python -c "import cli_gates; cli_gates.main()" embed ...`` (with tests/cli on PYTHONPATH and
``$NAPARI_MOBILESAM_TEST_GATE`` naming a folder) runs the real command, except that every task
after the first one of the run touches ``waiting-*`` in that folder and waits until the test
creates ``open`` there. So a test can send SIGINT at a moment it knows (one task finished, the
next one started, the rest not started), whatever the machine's load. dask workers get the same
gate through the worker setup function (pickled by reference, so they import this module).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

GATE_ENV = "NAPARI_MOBILESAM_TEST_GATE"


def _gate_folder() -> Path:
    return Path(os.environ[GATE_ENV])


def _gated(real: Callable[..., Any]) -> Callable[..., Any]:
    def run(task: Any, spec: Any, report: Any) -> Any:
        folder = _gate_folder()
        try:  # the first task of the run (in any process) goes through
            os.close(os.open(folder / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            (folder / f"waiting-{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()
            while not (folder / "open").exists():  # the gate: the test opens it
                time.sleep(0.01)
        return real(task, spec, report)

    return run


def install() -> None:
    """Gate the task kinds of this process (``run_task`` looks them up at call time)."""
    from napari_mobilesam.batch import tasks

    tasks._embed = _gated(tasks._embed)
    for kind, function in list(tasks._LABEL_KINDS.items()):
        tasks._LABEL_KINDS[kind] = _gated(function)


def gated_warm_up(spec: Any) -> int:
    """A dask worker's setup: the usual one, then the gate in that worker."""
    from napari_mobilesam.batch import tasks

    install()
    return tasks.warm_up(spec)


def main() -> None:
    from napari_mobilesam.batch import tasks
    from napari_mobilesam.cli import main as cli_main

    install()
    tasks.warm_up = gated_warm_up
    sys.exit(cli_main(sys.argv[1:]))
