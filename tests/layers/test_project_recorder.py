"""A Labels layer saved into a project folder: commits with their prompts, edits, undo and redo,
write failures, resume."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels, Points, Shapes

from fakes import FakePredictor
from napari_mobilesam.engine import project_store
from napari_mobilesam.engine.project_store import ProjectLockedError, ProjectStore
from napari_mobilesam.layers.label_image_writer import write_label_image
from napari_mobilesam.layers.labels_writer import create_aligned_labels
from napari_mobilesam.layers.plane import PlaneRef
from napari_mobilesam.layers.project_recorder import (
    PROJECT_METADATA_KEY,
    ModelInfo,
    ProjectRecorder,
    open_project,
    suggested_folder,
)
from napari_mobilesam.layers.segment import commit_objects, segment_from_layers


@pytest.fixture
def scene():
    viewer = ViewerModel()
    data = np.random.default_rng(1).integers(0, 1000, (4, 20, 30)).astype(np.uint16)
    image = viewer.add_layer(Image(data, contrast_limits=(100, 900), scale=(2, 1, 1)))
    points = viewer.add_layer(Points(np.zeros((0, 3)), ndim=3, features={"positive": []}))
    shapes = viewer.add_layer(Shapes(ndim=3))
    labels = viewer.add_layer(create_aligned_labels(image))
    viewer.dims.set_point(0, 4)  # world z 4 = data plane 2 (scale 2)
    return viewer, image, points, shapes, labels


def _folder_labels(folder: Path) -> np.ndarray:
    with ProjectStore.open(folder, writable=False) as store:
        return store.read_labels()


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]


def test_a_commit_is_saved_with_prompts_in_data_coordinates(scene, tmp_path: Path) -> None:
    viewer, image, points, shapes, labels = scene
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    folder = tmp_path / "cells.mobilesam"
    model = ModelInfo(weights, "torch", "cpu")
    recorder = ProjectRecorder.start(labels, folder, image=image, model=model)
    points.feature_defaults = {"positive": True}
    points.add([[4, 7, 12]])  # world (z=4, row 7, col 12) -> data plane 2
    shapes.add_rectangles(np.array([[4, 2, 3], [4, 2, 9], [4, 6, 9], [4, 6, 3]]))
    objects = segment_from_layers(viewer, image, points, shapes, predictor=FakePredictor())
    ids = commit_objects(labels, objects)
    assert ids == [1, 2]
    # Saved before commit_objects returned.
    assert np.array_equal(_folder_labels(folder), labels.data)
    (record,) = _records(folder)
    assert record["kind"] == "write" and record["planes"] == [[2]]
    box, click = record["objects"]
    assert (box["id"], box["mode"], click["id"], click["mode"]) == (1, "box", 2, "click")
    assert click["prompts"]["points"] == [[2.0, 7.0, 12.0]]  # (plane, row, col) of the data
    assert click["prompts"]["point_labels"] == [1]
    assert box["prompts"]["box"] == [[2.0, 2.0, 3.0], [2.0, 6.0, 9.0]]
    assert click["candidate"] == 1 and click["multimask"] is True  # FakePredictor's best
    assert click["contrast_limits"] == [100.0, 900.0]
    assert click["weights_sha256"] == __import__("hashlib").sha256(b"weights").hexdigest()
    assert (click["runtime"], click["device"]) == ("torch", "cpu")
    assert click["package_version"] and click["time"]
    manifest = json.loads((folder / "project.json").read_text())
    assert manifest["placement"]["scale"] == [2.0, 1.0, 1.0]
    assert manifest["image"]["contrast_limits"] == [100.0, 900.0]
    recorder.close()


def _commit_square(labels: Labels, plane: int, corner: int) -> list[int]:
    from napari_mobilesam.layers.labels_writer import write_masks

    mask = np.zeros((20, 30), bool)
    mask[corner : corner + 4, corner : corner + 5] = True
    ref = PlaneRef("x", (plane, None, None), (1, 2), (20, 30))
    return write_masks(labels, [(ref, mask)]).ids


def test_undo_redo_and_paint_are_saved_so_the_folder_matches_the_layer(
    scene, tmp_path: Path
) -> None:
    *_, labels = scene
    folder = tmp_path / "p"
    recorder = ProjectRecorder.start(labels, folder)
    _commit_square(labels, 1, 2)
    _commit_square(labels, 3, 5)
    labels.undo()
    assert np.array_equal(_folder_labels(folder), labels.data)
    assert not labels.data[3].any()
    labels.redo()
    assert np.array_equal(_folder_labels(folder), labels.data)
    labels.paint((0, 10, 10), 9)
    assert np.array_equal(_folder_labels(folder), labels.data)
    labels.undo()
    labels.undo()
    labels.refresh()  # a refresh that changes nothing records nothing
    assert np.array_equal(_folder_labels(folder), labels.data)
    kinds = [(r["kind"], r.get("undoes") or r.get("redoes")) for r in _records(folder)]
    assert kinds == [
        ("write", None), ("write", None), ("undo", 2), ("redo", 2), ("edit", None),
        ("undo", 5), ("undo", 2),
    ]  # fmt: skip
    assert [r["planes"] for r in _records(folder)][-3:] == [[[0]], [[0]], [[3]]]
    recorder.close()


def test_segment_everything_is_one_step_with_one_record_per_object(scene, tmp_path: Path) -> None:
    *_, labels = scene
    recorder = ProjectRecorder.start(labels, tmp_path / "p")
    planes = {}
    for z in (1, 2):
        image = np.zeros((20, 30), np.int32)
        image[2:5, 2:5] = 1
        image[10:12, 10:20] = 2 if z == 1 else 0
        planes[PlaneRef("x", (z, None, None), (1, 2), (20, 30))] = image
    with recorder.describe(mode="everything", settings={"points_per_side": 16}):
        report = write_label_image(labels, planes)
    (record,) = _records(tmp_path / "p")
    assert record["mode"] == "everything" and record["settings"] == {"points_per_side": 16}
    assert record["planes"] == [[1], [2]]
    by_id = {o["id"]: o["planes"] for o in record["objects"]}
    assert by_id == {report.ids[0]: [[1, None, None], [2, None, None]],
                     report.ids[1]: [[1, None, None]]}  # fmt: skip
    recorder.close()


def test_a_failed_save_warns_once_and_the_labels_stay(
    scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    *_, labels = scene
    messages: list[str] = []
    recorder = ProjectRecorder.start(labels, tmp_path / "p", notify=messages.append)
    _commit_square(labels, 0, 1)

    def full(target, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(project_store, "write_bytes_atomically", full)
    assert _commit_square(labels, 1, 1) == [2]  # the commit itself succeeds in napari
    assert _commit_square(labels, 2, 1) == [3]
    labels.undo()
    assert len(messages) == 1 and "disk is full" in messages[0]
    assert "still in napari" in messages[0]
    assert not recorder.saving
    assert labels.data[1].max() == 2  # nothing taken out of the layer
    monkeypatch.undo()
    recorder.close()
    assert [r["step"] for r in _records(tmp_path / "p")] == [1]


def test_resume_restores_the_layer_and_further_commits_append(scene, tmp_path: Path) -> None:
    *_, labels = scene
    folder = tmp_path / "p"
    recorder = ProjectRecorder.start(labels, folder)
    _commit_square(labels, 1, 2)
    recorder.close()
    resumed, recorder = open_project(folder)
    assert np.array_equal(resumed.data, labels.data)
    assert resumed.metadata[PROJECT_METADATA_KEY] == str(folder)
    assert list(resumed.scale) == [2.0, 1.0, 1.0]  # placed like the image
    assert _commit_square(resumed, 2, 3) == [2]
    resumed.undo()
    resumed.redo()
    assert [r["step"] for r in _records(folder)] == [1, 2, 3, 4]
    assert np.array_equal(_folder_labels(folder), resumed.data)
    with pytest.raises(ProjectLockedError):
        open_project(folder)
    recorder.close()


def test_suggested_folder_sits_beside_the_image_file(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, np.zeros((5, 5), np.uint8))
    from napari.layers._source import layer_source

    with layer_source(path=str(path)):
        image = Image(np.zeros((5, 5)))
    assert suggested_folder(image) == tmp_path / "cells.mobilesam"
    assert suggested_folder(Image(np.zeros((5, 5)))) is None


@pytest.mark.parametrize("keep_ids", [True, False])
def test_refine_is_saved_as_refine_with_its_ids(scene, tmp_path: Path, keep_ids: bool) -> None:
    from napari_mobilesam.layers.refine_layers import RefinedPlanes, write_refined

    *_, labels = scene
    recorder = ProjectRecorder.start(labels, tmp_path / "p")
    plane = np.zeros((20, 30), np.int32)
    plane[3:6, 3:6] = 7
    ref = PlaneRef("x", (2, None, None), (1, 2), (20, 30))
    report = write_refined(labels, RefinedPlanes({ref: plane}), keep_ids=keep_ids)
    (record,) = _records(tmp_path / "p")
    assert record["kind"] == "write" and record["mode"] == "refine"
    assert [(o["id"], o["mode"], o["planes"]) for o in record["objects"]] == [
        (report.ids[0], "refine", [[2, None, None]])
    ]
    assert report.ids == ([7] if keep_ids else [1])
    recorder.close()


def test_segment_everything_records_its_settings_and_contrast_limits(scene, tmp_path: Path) -> None:
    from napari_mobilesam.layers.everything_layers import EverythingSettings, PlaneLabels

    *_, labels = scene
    recorder = ProjectRecorder.start(labels, tmp_path / "p")
    planes = PlaneLabels(EverythingSettings(points_per_side=8), (100.0, 900.0))
    image = np.zeros((20, 30), np.int32)
    image[4:8, 4:8] = 1
    planes[PlaneRef("x", (0, None, None), (1, 2), (20, 30))] = image
    write_label_image(labels, planes)
    (record,) = _records(tmp_path / "p")
    assert record["mode"] == "everything" and record["settings"]["points_per_side"] == 8
    assert record["objects"][0]["contrast_limits"] == [100.0, 900.0]
    recorder.close()
