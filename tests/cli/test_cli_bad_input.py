"""Bad input: unreadable files, unwritable output, missing zarr, bad prompts, a silent
scheduler, Ctrl+C. Each gives a clear message, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli


def _bad_files(folder: Path) -> None:
    good = (folder / "b.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 3])  # truncated
    (folder / "noise.tif").write_bytes(b"II*\x00" + os.urandom(200))  # a broken TIFF


def test_unreadable_files_are_reported_and_the_rest_finish(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    _bad_files(image_folder)
    out = tmp_path / "out"
    argv = ["segment", str(image_folder / "cut.png"), "--points", "5,5", "--out", str(out)]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 1
    printed = capsys.readouterr()
    assert "failed: " in printed.out and "cut.png" in printed.out
    assert "Traceback" not in printed.out + printed.err
    assert list(out.iterdir()) == []

    cache = tmp_path / "cache"
    argv = [
        "embed",
        str(image_folder),
        "--cache",
        str(cache),
        "--weights",
        str(synthetic_checkpoint),
    ]
    assert run_cli(argv) == 1
    printed = capsys.readouterr().out
    assert "embed: 2 done, 0 skipped (already there), 2 failed" in printed
    assert "cut.png: cannot read" in printed and "noise.tif" in printed
    assert len(list(cache.glob("*/*.npy"))) == 2


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder nobody may write to; as root (who ignores permissions), part of sysfs."""
    if os.geteuid() == 0:
        return Path("/sys/napari-mobilesam-test-output")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_read_only_output_folder_is_refused_before_any_work(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = _read_only_folder(tmp_path)
    argv = ["segment", str(image_folder / "a.tif"), "--points", "5,5", "--out", str(out)]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the output folder" in err and "Traceback" not in err
    argv = ["embed", str(image_folder), "--cache", str(out), "--weights", str(synthetic_checkpoint)]
    assert run_cli(argv) == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_a_missing_zarr_path_is_named(tmp_path: Path, synthetic_checkpoint: Path, capsys) -> None:
    missing = tmp_path / "nowhere.zarr" / "0"
    argv = ["embed", str(missing), "--cache", str(tmp_path / "c")]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 1
    assert f"zarr path does not exist: {tmp_path / 'nowhere.zarr'}" in capsys.readouterr().out


def test_a_zarr_group_without_the_array_says_which_arrays_exist(tmp_path: Path, capsys) -> None:
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    create = getattr(group, "create_array", None) or group.create_dataset  # zarr 3 or 2
    create("raw", shape=(4, 4), dtype="uint8")
    argv = ["segment", str(tmp_path / "g.zarr"), "--points", "1,1", "--out", str(tmp_path / "o")]
    assert run_cli(argv) == 2
    assert "name the array" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("x,y\n1,2\n", "unknown column layout"),
        ("index,axis-0,axis-1\n0,10,90\n", "outside the image"),
    ],
)
def test_bad_prompt_files_stop_with_a_message(
    image_folder: Path, tmp_path: Path, prompt: str, message: str, capsys
) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text(prompt)
    argv = ["segment", str(image_folder / "a.tif"), "--points", str(path), "--out", str(tmp_path)]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_scheduler_that_does_not_answer_gives_a_message(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = ["embed", str(image_folder), "--cache", str(tmp_path / "c")]
    argv += ["--scheduler", f"tcp://127.0.0.1:{port}", "--scheduler-timeout", "1"]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert f"no dask scheduler answered at tcp://127.0.0.1:{port} within 1 s" in err


def test_unknown_scheduler_and_missing_weights_are_user_errors(
    image_folder: Path, tmp_path: Path, capsys
) -> None:
    argv = ["embed", str(image_folder), "--cache", str(tmp_path / "c")]
    with pytest.raises(SystemExit) as stop:  # argparse's usage error
        run_cli([*argv, "--scheduler", "cluster"])
    assert stop.value.code == 2
    assert "use threads, local:N" in capsys.readouterr().err
    assert run_cli([*argv, "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "weights file not found" in capsys.readouterr().err


def test_interrupt_while_writing_leaves_no_partial_file(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import tifffile

    real_imwrite = tifffile.imwrite

    def write_half_then_interrupt(path, data, **kwargs):
        real_imwrite(path, np.asarray(data)[: len(data) // 2], **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", write_half_then_interrupt)
    out = tmp_path / "out"
    argv = ["segment", str(image_folder / "a.tif"), "--points", "5,5", "--out", str(out)]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def gated_command(gate: Path, argv: list[str]) -> list[str]:
    """The command line in a subprocess whose tasks after the first wait at ``gate`` (see
    cli_gates.py); the environment it needs comes from :func:`gated_environment`."""
    return [sys.executable, "-c", "import cli_gates; cli_gates.main()", *argv]


def gated_environment(gate: Path) -> dict[str, str]:
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "NAPARI_MOBILESAM_TEST_GATE": str(gate)}


def wait_for(found, run: subprocess.Popen) -> None:
    """Wait until ``found()`` (the run reached a known point); a guard against a hang, not a
    measurement: the run is not timed."""
    give_up = time.monotonic() + 300
    while not found():
        if run.poll() is not None or time.monotonic() > give_up:
            run.kill()
            out, err = run.communicate()
            pytest.fail(f"the run ended or hung before the gate (exit {run.returncode}): {err}")
        time.sleep(0.02)


def test_ctrl_c_in_a_real_run_keeps_only_whole_outputs(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path
) -> None:
    import tifffile

    for seed in range(4):  # six inputs: one done, one at the gate, four not started
        tifffile.imwrite(image_folder / f"more{seed}.tif", np.full((64, 64), seed * 50, np.uint16))
    cache, gate = tmp_path / "cache", tmp_path / "gate"
    gate.mkdir()
    argv = ["embed", str(image_folder), "--cache", str(cache), "--workers", "1", "--quiet"]
    run = subprocess.Popen(
        gated_command(gate, [*argv, "--weights", str(synthetic_checkpoint)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=gated_environment(gate),
    )
    # The first task is finished (one thread: the second starts after it) and the second waits.
    wait_for(lambda: any(gate.glob("waiting-*")), run)
    run.send_signal(signal.SIGINT)
    (gate / "open").touch()  # the task in flight finishes; the others never start
    _, err = run.communicate(timeout=300)
    assert run.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    entries = list(cache.glob("*/*.npy"))
    assert 1 <= len(entries) <= 2
    assert [p.name for p in cache.rglob("*") if p.is_file() and p.suffix != ".npy"] == []
    for entry in entries:
        assert np.load(entry).shape == (1, 256, 64, 64)


def test_halo_without_tiles_is_refused(image_folder: Path, tmp_path: Path, capsys) -> None:
    argv = ["everything", str(image_folder), "--out", str(tmp_path / "o"), "--halo", "16"]
    assert run_cli(argv) == 2
    assert "--halo is the overlap of tiles" in capsys.readouterr().err
