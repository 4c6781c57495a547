"""Every subcommand on small synthetic data, in this process (scheduler: threads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import files_under, run_cli


def test_help_lists_every_subcommand_with_examples() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "napari_mobilesam", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("weights", "export", "embed", "segment", "everything", "examples:"):
        assert name in out


@pytest.mark.parametrize("command", ["embed", "segment", "everything"])
def test_subcommand_help_shows_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli([command, "--help"])
    assert stop.value.code == 0
    assert f"napari-mobilesam {command}" in capsys.readouterr().out


def test_weights_subcommand_reuses_the_weights_tool(synthetic_checkpoint: Path, capsys) -> None:
    assert run_cli(["weights", "--no-download", str(synthetic_checkpoint)]) == 0
    assert "explicit path" in capsys.readouterr().out


def test_export_subcommand_is_the_export_tool(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli(["export", "--help"])
    assert stop.value.code == 0
    assert "napari-mobilesam export" in capsys.readouterr().out


def _napari_request(data: np.ndarray, plane: int | None = None):
    """The plugin's own capture of an Image layer napari would make from ``data``."""
    from napari.components import ViewerModel
    from napari.layers import Image

    from napari_mobilesam.layers.segment import capture_request

    viewer = ViewerModel()
    layer = viewer.add_layer(Image(data))
    if plane is not None:
        viewer.dims.set_point(0, plane)
    return capture_request(viewer, layer)


def test_embed_fills_the_cache_the_plugin_reads(
    image_folder: Path, stack_tif: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import tifffile
    from PIL import Image

    from napari_mobilesam.batch.tasks import ModelSpec, get_model
    from napari_mobilesam.engine.embedding_cache import EmbeddingCache
    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.layers.segment import ensure_embedding

    cache = tmp_path / "cache"
    args = ["embed", str(image_folder), str(stack_tif), "--planes", "1:", "--cache", str(cache)]
    assert run_cli([*args, "--weights", str(synthetic_checkpoint)]) == 0
    assert "embed: 4 done, 0 skipped" in capsys.readouterr().out

    # The plugin, with its disk cache in that folder, finds every plane without encoding.
    model = get_model(ModelSpec(str(synthetic_checkpoint.resolve()), "auto"))
    predictor = SamPredictor(model)
    predictor.set_image = lambda *a, **k: pytest.fail("the plugin encoded: cache miss")
    plugin_cache = EmbeddingCache()
    plugin_cache.disk_folder = cache
    stack = tifffile.imread(stack_tif)
    requests = [
        _napari_request(tifffile.imread(image_folder / "a.tif")),
        _napari_request(np.array(Image.open(image_folder / "b.png"))),
        *(_napari_request(stack, plane) for plane in (1, 2)),
    ]
    for request in requests:
        assert ensure_embedding(request, predictor, plugin_cache) is True

    # Running again finds everything done.
    assert run_cli([*args, "--weights", str(synthetic_checkpoint)]) == 0
    assert "embed: 0 done, 4 skipped" in capsys.readouterr().out


def test_segment_writes_one_label_image_and_skips_it_next_time(
    image_folder: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import tifffile

    out = tmp_path / "out"
    argv = ["segment", str(image_folder / "a.tif"), "--out", str(out)]
    argv += [
        "--points",
        "20,20;60,60,0",
        "--boxes",
        "5,5,40,40",
        "--weights",
        str(synthetic_checkpoint),
    ]
    assert run_cli(argv) == 0
    assert "segment: 1 done" in capsys.readouterr().out
    labels = tifffile.imread(out / "a.tif")
    assert labels.shape == (64, 64) and labels.dtype == np.uint32
    assert set(np.unique(labels)) <= {0, 1}  # one object: the box with its points
    # The labels and their manifest (what they were made from: a re-run compares it).
    assert sorted(p.name for p in out.iterdir()) == [".a.tif.napari-mobilesam.json", "a.tif"]
    before = files_under(out)
    assert run_cli(argv) == 0
    assert "segment: 0 done, 1 skipped" in capsys.readouterr().out
    assert files_under(out) == before


def test_segment_a_stack_from_napari_csv_writes_a_zarr_volume(
    stack_tif: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import zarr
    from napari.layers import Points
    from napari_builtins.io import napari_write_points

    layer = Points(np.array([[1.0, 20, 30], [2.0, 40, 12]]))
    data, meta, _ = layer.as_layer_data_tuple()
    napari_write_points(str(tmp_path / "points.csv"), data, meta)
    out = tmp_path / "out"
    argv = ["segment", str(stack_tif), "--points", str(tmp_path / "points.csv"), "--out", str(out)]
    assert run_cli([*argv, "--weights", str(synthetic_checkpoint)]) == 0
    assert "segment: 2 done" in capsys.readouterr().out
    volume = zarr.open_array(str(out / "stack.zarr"), mode="r")
    assert volume.shape == (3, 64, 64) and volume.chunks == (1, 64, 64)
    assert not np.asarray(volume[0]).any()  # no prompt on plane 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["stack.zarr"]


def test_everything_labels_images_and_stacks(
    image_folder: Path, stack_tif: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import tifffile
    import zarr

    out = tmp_path / "out"
    argv = ["everything", str(image_folder / "a.tif"), str(stack_tif), "--out", str(out)]
    argv += ["--points-per-side", "4", "--planes", "1:3", "--weights", str(synthetic_checkpoint)]
    assert run_cli(argv) == 0
    assert "everything: 3 done" in capsys.readouterr().out
    assert tifffile.imread(out / "a.tif").shape == (64, 64)
    # Planes 1 and 2 are marked done; the volume is written once plane 0 is done too.
    assert not (out / "stack.zarr").exists()
    whole = [a for a in argv if a not in ("--planes", "1:3")]
    assert run_cli(whole) == 0
    assert "everything: 1 done, 3 skipped" in capsys.readouterr().out
    volume = zarr.open_array(str(out / "stack.zarr"), mode="r")
    assert volume.shape == (3, 64, 64) and volume.chunks == (1, 64, 64)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "a.tif",
        "stack.zarr",
    ]
    assert run_cli(whole) == 0
    assert "everything: 0 done, 4 skipped" in capsys.readouterr().out


def test_label_volume_exported_as_tif_when_asked(
    stack_tif: Path, synthetic_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    import tifffile

    out = tmp_path / "out"
    argv = ["segment", str(stack_tif), "--out", str(out), "--format", "tif"]
    argv += ["--points", str(_json_prompt(tmp_path)), "--weights", str(synthetic_checkpoint)]
    assert run_cli(argv) == 0
    assert tifffile.imread(out / "stack.tif").shape == (3, 64, 64)
    # The work store is gone; the manifest says what the volume was made from.
    assert sorted(p.name for p in out.iterdir()) == [
        ".stack.tif.napari-mobilesam.json",
        "stack.tif",
    ]


def _json_prompt(tmp_path: Path) -> Path:
    import json

    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"plane": 2, "points": [[30, 30]], "boxes": [[20, 20, 40, 40]]}))
    return path


def test_the_console_script_and_the_distributed_extra_are_declared() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from importlib import import_module

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    module, _, name = project["scripts"]["napari-mobilesam"].partition(":")
    assert callable(getattr(import_module(module), name))
    assert {"dask", "distributed"} <= set(project["optional-dependencies"]["distributed"])
    assert "distributed" in project["optional-dependencies"]["testing"]
