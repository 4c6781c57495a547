"""Scale-out on dask.distributed: LocalCluster workers give the same bytes as threads, and a
worker killed mid-run still leaves a complete, correct result. Clusters bind to 127.0.0.1 only
and are stopped by the code under test."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import blob_image, files_under, run_cli

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow  # each test starts a LocalCluster (processes, torch, the model)

N_PLANES = 4


@pytest.fixture(scope="module")
def six_planes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stack") / "six.tif"
    tifffile.imwrite(
        path, np.stack([blob_image(s) for s in range(N_PLANES)]), photometric="minisblack"
    )
    return path


@pytest.fixture(scope="module")
def threads_cache(six_planes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The cache files ``embed`` writes with the default scheduler (the reference)."""
    from napari_mobilesam.cli import main

    weights = Path(__file__).resolve().parents[3] / "shared/golden/synthetic_mobile_sam.pt"
    if not weights.is_file():
        pytest.skip("synthetic checkpoint not found")
    cache = tmp_path_factory.mktemp("threads")
    assert main(["embed", str(six_planes), "--cache", str(cache), "--weights", str(weights)]) == 0
    files = files_under(cache)
    assert len(files) == N_PLANES
    return files


def test_local_cluster_writes_the_same_bytes_as_threads(
    six_planes: Path, threads_cache: dict, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    cache = tmp_path / "cache"
    argv = ["embed", str(six_planes), "--cache", str(cache), "--scheduler", "local:2"]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 0
    assert f"embed: {N_PLANES} done" in capsys.readouterr().out
    assert files_under(cache) == threads_cache


def test_a_worker_killed_mid_run_still_gives_the_complete_result(
    six_planes: Path, threads_cache: dict, synthetic_checkpoint: Path, tmp_path: Path
) -> None:
    from napari_mobilesam.batch.files import napari_contrast_limits, open_source
    from napari_mobilesam.batch.tasks import DONE, ModelSpec, Task, run_tasks

    source = open_source(six_planes)
    options = {"cache": str(tmp_path / "cache"), "contrast_limits": napari_contrast_limits(source)}
    tasks = [Task("embed", source, plane, options=options) for plane in source.planes()]
    state: dict = {}

    def on_start(client) -> None:
        state["client"] = client
        state["pids"] = client.run(os.getpid)
        # One address per worker, all on the loopback interface.
        assert len(state["pids"]) == 2
        assert all(address.startswith("tcp://127.0.0.1:") for address in state["pids"])

    def on_report(report) -> None:
        # After the first task, kill the other worker: it is busy with its own task.
        if "killed" not in state:
            state["killed"] = next(p for p in state["pids"].values() if p != report.pid)
            os.kill(state["killed"], signal.SIGKILL)

    spec = ModelSpec(str(synthetic_checkpoint.resolve()), "auto")
    reports = run_tasks(tasks, spec, "local:2", on_start=on_start, on_report=on_report)
    assert sorted(r.name for r in reports) == sorted(t.name for t in tasks)
    assert {r.status for r in reports} == {DONE}
    npy = {k: v for k, v in files_under(tmp_path / "cache").items() if k.endswith(".npy")}
    assert npy == threads_cache


def test_ctrl_c_stops_a_local_cluster_run_cleanly(
    six_planes: Path, synthetic_checkpoint: Path, tmp_path: Path
) -> None:
    """Ctrl+C in a terminal reaches the whole process group, workers included. The workers'
    tasks after the first wait at a gate (cli_gates.py), so the signal lands while planes are
    left whatever the machine's load."""
    import subprocess

    from test_cli_bad_input import gated_command, gated_environment, wait_for

    out, gate = tmp_path / "out", tmp_path / "gate"
    gate.mkdir()
    argv = ["segment", str(six_planes), "--points", str(_points_on_every_plane(tmp_path))]
    argv += ["--out", str(out), "--scheduler", "local:2", "--quiet"]
    run = subprocess.Popen(
        gated_command(gate, [*argv, "--weights", str(synthetic_checkpoint)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=gated_environment(gate),
    )
    done = out / ".six.planes.zarr.done"
    # One plane is finished and marked, another waits at the gate, the rest are not done.
    wait_for(lambda: any(done.glob("plane-*")) and any(gate.glob("waiting-*")), run)
    os.killpg(run.pid, signal.SIGINT)
    (gate / "open").touch()
    _, err = run.communicate(timeout=300)
    assert run.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    # No result under its name (the volume is unfinished), no temporary; the marked planes stay
    # for the next run.
    assert sorted(p.name for p in out.iterdir()) == [".six.planes.zarr", ".six.planes.zarr.done"]
    assert [p.name for p in done.iterdir() if p.name.endswith(".partial")] == []


def _points_on_every_plane(folder: Path) -> Path:
    path = folder / "points.csv"
    rows = [f"{i},{z},30,30" for i, z in enumerate(range(N_PLANES))]
    path.write_text("index,axis-0,axis-1,axis-2\n" + "\n".join(rows) + "\n")
    return path
