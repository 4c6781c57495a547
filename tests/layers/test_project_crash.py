"""Crash safety: a process saving into a project folder is killed with SIGKILL.

The process is plain Python driving the layers-level API (a napari ``Labels`` layer, the
package's writers and a :class:`ProjectRecorder`), not a napari window: the code path that saves
is the same, and a window would add a slow start without reaching other code. It prints one line
per commit once the writer has returned ("reported"). The kill comes after it has printed, or
while it is blocked inside a write by the store's test gate; no sleeps, no timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import zarr

from napari_mobilesam.engine.project_store import (
    JOURNAL_NAME,
    TEST_GATE_ENV,
    ProjectStore,
)
from napari_mobilesam.layers.labels_writer import write_objects
from napari_mobilesam.layers.plane import PlaneRef
from napari_mobilesam.layers.project_recorder import open_project

SHAPE = (6, 24, 32)

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari.layers import Labels
    from napari_mobilesam.layers.labels_writer import write_objects
    from napari_mobilesam.layers.plane import PlaneRef
    from napari_mobilesam.layers.project_recorder import ProjectRecorder

    folder, commits = sys.argv[1], int(sys.argv[2])
    labels = Labels(np.zeros({shape}, np.uint32))
    ProjectRecorder.start(labels, folder, notify=print)
    for number in range(commits):
        # Commit n covers planes n..n+2 (a propagated object): several chunks per step.
        obj = {{}}
        for z in range(number, min(number + 3, {shape}[0])):
            mask = np.zeros({shape}[1:], bool)
            mask[2 + number : 6 + number, 3 : 9 + number] = True
            obj[PlaneRef("x", (z, None, None), (1, 2), {shape}[1:])] = mask
        ids = write_objects(labels, [obj], protect=False).ids
        print("committed", number + 1, ids[0], flush=True)
    print("idle", flush=True)
    sys.stdin.read()
    """
).format(shape=SHAPE)


def _expected(commits: int) -> np.ndarray:
    """The labels after ``commits`` commits of WRITER."""
    volume = np.zeros(SHAPE, np.uint32)
    for number in range(commits):
        for z in range(number, min(number + 3, SHAPE[0])):
            volume[z, 2 + number : 6 + number, 3 : 9 + number] = number + 1
    return volume


def _run_until(folder: Path, commits: int, stop_line: str, gate: int | None) -> list[str]:
    """Start WRITER, read its lines until one starts with ``stop_line``, SIGKILL it."""
    env = dict(os.environ)
    env.pop(TEST_GATE_ENV, None)
    if gate is not None:
        env[TEST_GATE_ENV] = str(gate)
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), str(commits)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env,
    )  # fmt: skip
    lines = []
    try:
        for line in process.stdout:
            lines.append(line.strip())
            if line.startswith(stop_line):
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, lines
    return lines


def _check_resume(folder: Path, reported: int) -> None:
    """Every reported commit is there, whole; resuming works and appends."""
    with ProjectStore.open(folder, writable=False) as store:
        # Read without recovery: the records are exactly the reported commits.
        assert [r["step"] for r in store.records] == list(range(1, reported + 1))
    labels, recorder = open_project(folder, notify=print)  # takes the dead writer's lock
    try:
        assert np.array_equal(labels.data, _expected(reported))
        assert not list((folder / JOURNAL_NAME).iterdir())
        mask = np.zeros(SHAPE[1:], bool)
        mask[20:23, 20:25] = True
        plane = PlaneRef("x", (5, None, None), (1, 2), SHAPE[1:])
        assert write_objects(labels, [{plane: mask}]).ids == [reported + 1]
        assert recorder.last_step["step"] == reported + 1
    finally:
        recorder.close()
    with ProjectStore.open(folder, writable=False) as store:
        assert np.array_equal(store.read_labels(), labels.data)


def test_killed_after_several_commits_keeps_every_reported_commit(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    lines = _run_until(folder, 4, "idle", gate=None)
    assert [line for line in lines if line.startswith("committed")] == [
        "committed 1 1", "committed 2 2", "committed 3 3", "committed 4 4",
    ]  # fmt: skip
    _check_resume(folder, 4)


def test_killed_inside_a_write_loses_only_that_write(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    lines = _run_until(folder, 5, "project write blocked in step 4", gate=4)
    assert [line for line in lines if line.startswith("committed")] == [
        "committed 1 1", "committed 2 2", "committed 3 3",
    ]  # fmt: skip
    # The killed step had written its first plane (plane 3) but no record; the journal
    # holds what that plane was before.
    assert list((folder / JOURNAL_NAME).glob("000004.npz"))
    raw = zarr.open_array(str(folder / "labels.zarr"), mode="r")
    # Half of the object in flight is on disk: plane 3 written, planes 4 and 5 not yet.
    assert raw[3].max() == 4 and np.array_equal(raw[4], _expected(3)[4])
    with ProjectStore.open(folder, writable=False) as store:  # a reader does not see it
        assert np.array_equal(store.read_labels(), _expected(3))
    _check_resume(folder, 3)  # ... and resuming removes it: never half an object
