"""Hostile input to the batch commands, by class: nothing reported done that is not, no output
this program did not write ever replaced, no traceback (exit 2 and one line naming the
argument), no leftovers, readable outputs, refused unknown prompt columns, and Ctrl+C that
always ends with exit 130 while work is left."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import blob_image, files_under, run_cli

from napari_mobilesam.engine.atomic_files import temporary_name


def _one_line_usage_error(capsys, command: str, argument: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"napari-mobilesam {command}: "), err
    assert argument in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def _usage_error(argv: list[str]) -> int:
    """Exit status of a run that argparse or the planning refuses (either way)."""
    try:
        return run_cli(argv)
    except SystemExit as stop:
        return int(stop.code)


# --- 1. Reported as done, but wrong -------------------------------------------------------------


@pytest.mark.parametrize("planes", ["100:200", "3", "2:9", "-5:", "1:1", "3:1", "x"])
@pytest.mark.parametrize("command", ["everything", "embed"])
def test_planes_outside_the_stack_are_refused(
    stack_tif: Path, tmp_path: Path, capsys, command: str, planes: str
) -> None:
    out = tmp_path / "out"
    where = ["--out", str(out)] if command == "everything" else ["--cache", str(out)]
    assert _usage_error([command, str(stack_tif), *where, f"--planes={planes}"]) == 2
    err = _one_line_usage_error(capsys, command, "--planes")
    assert "3 planes" in err or "use A:B" in err
    assert not out.exists() or [p for p in out.rglob("*") if p.is_file()] == []


def test_planes_of_2d_images_are_refused(image_folder: Path, tmp_path: Path, capsys) -> None:
    argv = ["everything", str(image_folder), "--out", str(tmp_path / "o"), "--planes", "0:1"]
    assert run_cli(argv) == 2
    assert "no input is a stack" in _one_line_usage_error(capsys, "everything", "--planes")


def test_a_run_of_some_planes_marks_only_those(
    stack_tif: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    base = ["everything", str(stack_tif), "--out", str(out), "--points-per-side", "2"]
    base += ["--weights", str(synthetic_checkpoint)]
    assert run_cli([*base, "--planes", "0:1"]) == 0
    printed = capsys.readouterr().out
    assert "everything: 1 done, 0 skipped" in printed and "1 of 3 planes done" in printed
    assert not (out / "stack.zarr").exists()  # no volume with two never-segmented planes
    assert run_cli([*base, "--planes", "1:3"]) == 0
    assert "everything: 2 done, 0 skipped" in capsys.readouterr().out
    assert (out / "stack.zarr").is_dir()
    assert run_cli(base) == 0
    assert "everything: 0 done, 3 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("limits", ["nan,nan", "200,10", "5,5", "inf,1", "0,-inf", "1", "a,b"])
def test_unusable_contrast_limits_are_refused(
    image_folder: Path, tmp_path: Path, capsys, limits: str
) -> None:
    argv = ["embed", str(image_folder), "--cache", str(tmp_path / "c")]
    assert _usage_error([*argv, "--contrast-limits", limits]) == 2
    _one_line_usage_error(capsys, "embed", "--contrast-limits")


def test_a_float_image_with_infinite_pixels_gets_finite_limits(
    tmp_path: Path, synthetic_checkpoint: Path, capsys
) -> None:
    from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache, model_fingerprint
    from napari_mobilesam.engine.image_conversion import shrink_for_encoder, to_uint8_rgb
    from napari_mobilesam.model.build import build_mobile_sam

    image = blob_image(7).astype(np.float32)
    image[0, 0] = np.inf
    image[1, 1] = -np.inf
    tifffile.imwrite(tmp_path / "f.tif", image)
    cache = tmp_path / "cache"
    argv = ["embed", str(tmp_path / "f.tif"), "--cache", str(cache)]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 0
    assert "embed: 1 done" in capsys.readouterr().out
    finite = image[np.isfinite(image)]
    expected = to_uint8_rgb(
        shrink_for_encoder(image), contrast_limits=(float(finite.min()), float(finite.max()))
    )
    assert expected.max() > 0  # not a black plane
    model_id = model_fingerprint(build_mobile_sam(str(synthetic_checkpoint), device="cpu"))
    key = DiskEmbeddingCache(cache, model_id).key(expected)
    assert [p.stem for p in cache.glob("*/*.npy")] == [key]


def test_a_full_disk_is_a_failure_not_done(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache

    def full(path, embedding):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DiskEmbeddingCache, "_write", staticmethod(full))
    cache = tmp_path / "cache"
    argv = ["embed", str(image_folder / "a.tif"), "--cache", str(cache)]
    with pytest.warns(UserWarning, match="cannot be stored"):
        assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 1
    printed = capsys.readouterr().out
    assert "embed: 0 done" in printed and "No space left on device" in printed

    def full_labels(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_labels)
    out = tmp_path / "out"
    argv = ["segment", str(image_folder / "a.tif"), "--points", "20,20", "--out", str(out)]
    argv += ["--weights", str(synthetic_checkpoint)]
    assert run_cli(argv) == 1
    assert "segment: 0 done" in capsys.readouterr().out
    monkeypatch.undo()  # space again: the next run does the work, it does not skip it
    assert run_cli(argv) == 0
    assert "segment: 1 done" in capsys.readouterr().out


def _segment(image: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    argv = ["segment", str(image), "--out", str(out), "--weights", str(weights)]
    return [*argv, *(extra or ("--points", "20,20"))]


def test_a_rerun_skips_only_what_the_same_recipe_made(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    first = image_folder / "a.tif"
    assert run_cli(_segment(first, out, synthetic_checkpoint)) == 0
    capsys.readouterr()
    assert run_cli(_segment(first, out, synthetic_checkpoint)) == 0
    assert "segment: 0 done, 1 skipped" in capsys.readouterr().out
    before = files_under(out)
    other_input = tmp_path / "elsewhere" / "a.png"  # the same stem, another image
    other_input.parent.mkdir()
    from PIL import Image

    Image.fromarray(blob_image(9, dtype=np.uint8)).save(other_input)
    changed = [
        _segment(other_input, out, synthetic_checkpoint),
        _segment(first, out, synthetic_checkpoint, "--points", "30,30"),
        _segment(first, out, synthetic_checkpoint, "--points", "20,20", "--single-mask"),
        _segment(first, out, synthetic_checkpoint, "--points", "20,20", "--contrast-limits", "0,9"),
    ]
    for argv in changed:
        assert run_cli(argv) == 1
        printed = capsys.readouterr().out
        assert "0 skipped" in printed and "pass --overwrite to replace them" in printed
        assert files_under(out) == before
    # The input edited in place (new size or time) is another input too.
    tifffile.imwrite(first, blob_image(11))
    assert run_cli(_segment(first, out, synthetic_checkpoint)) == 1
    assert "pass --overwrite" in capsys.readouterr().out
    assert run_cli([*_segment(first, out, synthetic_checkpoint), "--overwrite"]) == 0
    assert "segment: 1 done" in capsys.readouterr().out
    assert files_under(out) != before


# --- 1/2. Folders and files this program did not write ------------------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_outputs_of_others_are_never_replaced(
    image_folder: Path,
    synthetic_checkpoint: Path,
    tmp_path: Path,
    capsys,
    kind: str,
    overwrite: bool,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "a.tif"
    if kind == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("someone's work")
    else:
        target.write_bytes(b"someone's labels")
    before = files_under(out)
    argv = _segment(image_folder / "a.tif", out, synthetic_checkpoint)
    assert run_cli(argv + (["--overwrite"] if overwrite else [])) == 1
    printed = capsys.readouterr().out
    assert "skipped" in printed and "0 skipped" in printed and "0 done" in printed
    assert f"is a {kind} napari-mobilesam did not write" in printed
    assert files_under(out) == before


# --- 4. Messages, not tracebacks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("--scheduler-timeout", "nan"),
        ("--scheduler-timeout", "-1"),
        ("--scheduler-timeout", "inf"),
        ("--scheduler-timeout", "0"),
        ("--workers", "0"),
        ("--workers", "1e9"),
        ("--points-per-side", "1000000"),
        ("--points-per-side", "0"),
        ("--points-per-side", "nan"),
        ("--tile-shape", "nan,64"),
        ("--tile-shape", "8,8"),
        ("--halo", "-3"),
    ],
)
def test_bad_numbers_are_refused_naming_the_argument(
    image_folder: Path, tmp_path: Path, capsys, argument: str, value: str
) -> None:
    argv = ["everything", str(image_folder), "--out", str(tmp_path / "o"), "--tile-shape", "64,64"]
    assert _usage_error([*argv, argument, value]) == 2
    err = _one_line_usage_error(capsys, "everything", argument)
    if argument == "--points-per-side":
        assert "from 1 to 128" in err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.csv", "index,axis-0,axis-1,axis-2\n0,nan,10,10\n", "not finite"),
        ("p.csv", "index,axis-0,axis-1,axis-2\n0,inf,10,10\n", "not finite"),
        ("p.json", '{"points": [[1, 2]], "plane": NaN}', "'plane' must be"),
        ("p.json", '{"points": [[1, 2]], "plane": 1.5}', "'plane' must be"),
        ("p.json", '{"points": [[1, 2]], "plane": "0"}', "'plane' must be"),
        ("p.json", '{"points": [[NaN, 2]], "plane": 0}', "not finite"),
        ("p.json", "[1, 2]", "unknown JSON layout"),
        ("p.json", '"points"', "unknown JSON layout"),
        ("p.json", '{"objects": [5], "plane": 0}', "each entry of 'objects'"),
        ("p.json", '{"objects": {"a": 1}, "plane": 0}', "'objects' must be a list"),
        ("p.json", '{"objects": [{"points": [[1, 2]], "colour": 3}], "plane": 0}', "keys"),
    ],
)
def test_bad_numbers_in_prompt_files_are_named(
    stack_tif: Path, tmp_path: Path, capsys, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    argv = ["segment", str(stack_tif), "--points", str(path), "--out", str(tmp_path / "o")]
    assert run_cli(argv) == 2
    err = _one_line_usage_error(capsys, "segment", str(path))
    assert message in err


def test_inline_points_must_be_finite(image_folder: Path, tmp_path: Path, capsys) -> None:
    argv = ["segment", str(image_folder / "a.tif"), "--out", str(tmp_path / "o")]
    assert run_cli([*argv, "--points", "nan,3"]) == 2
    assert "finite" in _one_line_usage_error(capsys, "segment", "nan,3")


def test_file_names_that_are_not_utf8_are_printed(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    if os.name != "posix":
        pytest.skip("file names as bytes")
    folder = os.fsencode(image_folder)
    bad = os.path.join(folder, b"caf\xe9-broken.tif")
    with open(bad, "wb") as fh:
        fh.write(b"II*\x00" + b"\x01" * 64)  # unreadable: listed as failed by name
    cache = tmp_path / "cache"
    argv = ["embed", str(image_folder), "--cache", str(cache)]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 1
    printed = capsys.readouterr().out
    assert "embed: 2 done, 0 skipped (already there), 1 failed" in printed
    assert "caf\\udce9-broken.tif" in printed


# --- 6, 7. Leftovers and permissions ------------------------------------------------------------


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits and process ids")
def test_outputs_are_readable_as_the_umask_says_and_leftovers_are_swept(
    image_folder: Path, stack_tif: Path, synthetic_checkpoint: Path, tmp_path: Path, umask_027
) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    name = temporary_name(out / "old.tif").name.split(".")
    left = out / ".".join([*name[:-3], f"{name[-3].split('-')[0]}-{dead}-abc", *name[-2:]])
    left.write_bytes(b"a killed run's half file")
    os.utime(left, (1_000_000.0, 1_000_000.0))
    users = [out / ".notes.partial", out / "mine.txt"]
    for path in users:
        path.write_text("the user's")
    assert run_cli(_segment(image_folder / "a.tif", out, synthetic_checkpoint)) == 0
    assert not left.exists() and all(p.exists() for p in users)
    assert stat.S_IMODE((out / "a.tif").stat().st_mode) == 0o640
    points = tmp_path / "points.csv"
    points.write_text("index,axis-0,axis-1,axis-2\n0,1,30,30\n")
    argv = ["segment", str(stack_tif), "--points", str(points), "--out", str(out)]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 0
    volume = out / "stack.zarr"
    assert stat.S_IMODE(volume.stat().st_mode) == 0o750
    modes = {stat.S_IMODE(p.stat().st_mode) for p in volume.rglob("*") if p.is_file()}
    assert modes == {0o640}


# --- 8. Unknown prompt columns ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "content", "unknown"),
    [
        ("--points", "index,axis-0,axis-1,label\n0,10,10,0\n", "label"),
        ("--points", "index,axis-0,axis-1,positive,size\n0,10,10,True,3\n", "size"),
        (
            "--boxes",
            "index,shape-type,vertex-index,axis-0,axis-1,colour\n0,rectangle,0,1,1,red\n",
            "colour",
        ),
    ],
)
def test_unknown_csv_columns_are_refused(
    image_folder: Path, tmp_path: Path, capsys, option: str, content: str, unknown: str
) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text(content)
    argv = ["segment", str(image_folder / "a.tif"), option, str(path), "--out", str(tmp_path)]
    assert run_cli(argv) == 2
    err = _one_line_usage_error(capsys, "segment", unknown)
    assert "index, axis-0, axis-1" in err  # the columns that are read


# --- 10. Ctrl+C ends with 130 whenever work is left ---------------------------------------------


def _interrupt_now() -> None:
    signal.raise_signal(signal.SIGINT)  # handled before the next line runs


@pytest.mark.parametrize("when", ["planning", "before any report", "swallowed mid-run"])
def test_an_interrupted_run_exits_130(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, monkeypatch, capsys, when
) -> None:
    from napari_mobilesam.cli import commands

    real_run_tasks = commands.run_tasks

    def run_tasks(tasks, spec, scheduler, *, finals=(), on_report=None, **kwargs):
        if when == "before any report":
            _interrupt_now()
        try:  # a library that catches Ctrl+C and goes on (the command must still know)
            real_run_tasks(tasks[:1], spec, scheduler, on_report=on_report, **kwargs)
            _interrupt_now()
        except KeyboardInterrupt:
            pass
        return []

    def discover(inputs):
        _interrupt_now()

    monkeypatch.setattr(commands, "run_tasks", run_tasks)
    if when == "planning":
        monkeypatch.setattr(commands, "discover", discover)
    argv = ["embed", str(image_folder), "--cache", str(tmp_path / "c")]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_run_that_ends_normally_is_not_130(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    argv = ["embed", str(image_folder / "a.tif"), "--cache", str(tmp_path / "c")]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 0
    assert json.dumps(capsys.readouterr().out).count("1 done") == 1


def test_everything_defaults_to_the_plugins_cpu_grid(capsys) -> None:
    from napari_mobilesam.cli import build_parser
    from napari_mobilesam.engine.everything import CPU_EVERYTHING_DEFAULTS
    from napari_mobilesam.layers.everything_layers import CPU_DEFAULTS

    args = build_parser().parse_args(["everything", "x.tif", "--out", "o"])
    assert args.points_per_side == CPU_DEFAULTS.points_per_side == 16
    # Every default the widget's "CPU defaults" button sets is the command line's default too.
    for name, value in CPU_EVERYTHING_DEFAULTS.items():
        assert getattr(args, name) == getattr(CPU_DEFAULTS, name) == value, name
    for bad in ("nan", "1.5", "-0.1", "x"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(
                ["everything", "x.tif", "--out", "o", "--pred-iou-thresh", bad]
            )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["everything", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default 16" in text and "17 s per 1024 x 1024 image" in text
