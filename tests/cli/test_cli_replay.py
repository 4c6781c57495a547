"""``napari-mobilesam replay``: a recorded project replayed from the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from golden_cases import SYNTHETIC_CHECKPOINT
from napari_mobilesam.cli import main
from napari_mobilesam.engine.project_store import ProjectStore

pytestmark = pytest.mark.skipif(
    not SYNTHETIC_CHECKPOINT.is_file(), reason="the golden folder (synthetic checkpoint) is absent"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A 2D project of one click, recorded through the layers API on a TIFF image."""
    from napari.components import ViewerModel
    from napari.layers import Image, Points

    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.layers.labels_writer import create_aligned_labels
    from napari_mobilesam.layers.project_recorder import ModelInfo, ProjectRecorder
    from napari_mobilesam.layers.segment import commit_objects, segment_from_layers
    from napari_mobilesam.model.build import build_mobile_sam

    folder = tmp_path_factory.mktemp("cli_replay")
    data = np.random.default_rng(2).integers(0, 4000, (36, 44)).astype(np.uint16)
    tifffile.imwrite(folder / "cells.tif", data)
    viewer = ViewerModel()
    image = viewer.add_layer(Image(data, name="cells"))
    points = viewer.add_layer(Points([[12, 20]]))
    labels = viewer.add_layer(create_aligned_labels(image))
    recorder = ProjectRecorder.start(labels, folder / "cells.mobilesam", image=image,
                                     model=ModelInfo(SYNTHETIC_CHECKPOINT))  # fmt: skip
    predictor = SamPredictor(build_mobile_sam(str(SYNTHETIC_CHECKPOINT)))
    commit_objects(labels, segment_from_layers(viewer, image, points, predictor=predictor))
    recorder.close()
    return folder


def test_replay_writes_a_project_and_a_table(project: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["replay", str(project / "cells.mobilesam"), "--image",
                 str(project / "cells.tif"), "--weights", str(SYNTHETIC_CHECKPOINT),
                 "--out", str(out), "--device", "cpu"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "identical to the stored labels" in printed
    (row,) = list(csv.DictReader((out / "replay.csv").open()))
    assert (row["id"], row["mode"], row["iou"]) == ("1", "click", "1.0000")
    with (
        ProjectStore.open(out / "project", writable=False) as replayed,
        ProjectStore.open(project / "cells.mobilesam", writable=False) as stored,
    ):
        assert np.array_equal(replayed.read_labels(), stored.read_labels())
    # A second run into the same folder needs --overwrite.
    again = ["replay", str(project / "cells.mobilesam"), "--image", str(project / "cells.tif"),
             "--out", str(out)]  # fmt: skip
    assert main(again) == 2
    assert "holds a replay already; add --overwrite" in capsys.readouterr().err


def test_replay_on_a_local_cluster_gives_the_same_labels(
    project: Path, tmp_path: Path, capsys
) -> None:
    """--scheduler local:1 runs the replay as one task on a worker process: same labels."""
    pytest.importorskip("distributed", reason='pip install "napari-mobilesam[distributed]"')
    out = tmp_path / "cluster"
    code = main(["replay", str(project / "cells.mobilesam"), "--image",
                 str(project / "cells.tif"), "--weights", str(SYNTHETIC_CHECKPOINT),
                 "--out", str(out), "--device", "cpu", "--scheduler", "local:1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "identical to the stored labels" in printed
    with (
        ProjectStore.open(out / "project", writable=False) as replayed,
        ProjectStore.open(project / "cells.mobilesam", writable=False) as stored,
    ):
        assert np.array_equal(replayed.read_labels(), stored.read_labels())
    assert (out / "replay.csv").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--contrast-limits", "0,10"], "replay uses the contrast limits each record kept"),
        (["--image", "missing.tif"], "missing.tif"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    project: Path, tmp_path: Path, capsys, extra, message
) -> None:
    code = main(["replay", str(project / "cells.mobilesam"), "--out", str(tmp_path / "o"),
                 *extra])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_folder_of_another_version_exits_2(project: Path, tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "copy.mobilesam"
    shutil.copytree(project / "cells.mobilesam", copy)
    manifest = json.loads((copy / "project.json").read_text())
    manifest["format_version"] = 7
    (copy / "project.json").write_text(json.dumps(manifest))
    assert main(["replay", str(copy), "--out", str(tmp_path / "o")]) == 2
    assert "format version 7" in capsys.readouterr().err
