"""The widget's "Save to project" section: commits saved as they happen, the suggestion beside
the image file, one clear message when the folder cannot be written (the work stays)."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from napari_mobilesam.engine import project_store
from napari_mobilesam.engine.project_store import ProjectStore
from napari_mobilesam.widget import project_saving

pytestmark = pytest.mark.qt


@pytest.fixture
def docked(make_napari_viewer, golden_model, synthetic_checkpoint: Path, tmp_path: Path):
    """(viewer, image, widget) for a small image opened from a TIFF file."""
    from napari_mobilesam import SamPredictor

    path = tmp_path / "cells.tif"
    data = np.random.default_rng(5).normal(1000, 200, (40, 48)).astype(np.float32)
    tifffile.imwrite(path, data)
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(path), plugin="napari")
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    widget.use_predictor(SamPredictor(golden_model), synthetic_checkpoint, "cpu")
    widget.live = False
    return viewer, image, widget


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]


def test_commits_and_undo_are_saved_beside_the_image(docked, tmp_path: Path) -> None:
    viewer, image, widget = docked
    panel = widget.saving.panel
    assert panel.suggest_button.enabled
    panel.suggest_button.changed.emit(True)
    folder = tmp_path / "cells.mobilesam"
    assert panel.folder == folder
    points, _ = widget.create_prompt_layers()
    points.add([[10, 20]])
    assert widget.segment_and_commit() == [1]
    labels = widget.labels_layer
    (record,) = _records(folder)
    (obj,) = record["objects"]
    assert (obj["id"], obj["mode"], obj["prompts"]["points"]) == (1, "click", [[10.0, 20.0]])
    checkpoint = widget.loader.source
    assert obj["weights_sha256"] == hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    assert obj["runtime"] == "torch" and obj["device"] == "cpu"
    labels.undo()
    assert _records(folder)[-1]["kind"] == "undo"
    with ProjectStore.open(folder, writable=False) as store:
        assert np.array_equal(store.read_labels(), labels.data)
    assert "saving to" in panel.state_label.value
    widget.close()
    # Closing the widget releases the folder: it can be continued.
    ProjectStore.open(folder).close()


def test_an_unwritable_folder_is_reported_once_and_the_work_stays(
    docked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer, image, widget = docked
    warnings: list[str] = []
    monkeypatch.setattr(project_saving, "show_warning", warnings.append)

    def read_only(target, data):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(project_store, "write_bytes_atomically", read_only)
    widget.saving.panel.folder = tmp_path / "ro"
    points, _ = widget.create_prompt_layers()
    points.add([[10, 20]])
    assert widget.segment_and_commit() == [1]
    points.add([[30, 40]])
    assert widget.segment_and_commit() == [2]
    assert len(warnings) == 1 and "not writable" in warnings[0]
    assert "still in napari" in warnings[0]
    assert set(np.unique(widget.labels_layer.data)) == {0, 1, 2}
    assert "not saving" in widget.saving.panel.state_label.value


def test_a_project_opened_in_napari_continues_from_the_widget(docked, tmp_path: Path) -> None:
    import npe2

    viewer, image, widget = docked
    folder = tmp_path / "cells.mobilesam"
    widget.saving.panel.folder = folder
    points, _ = widget.create_prompt_layers()
    points.add([[10, 20]])
    assert widget.segment_and_commit() == [1]
    viewer.layers.remove(widget.labels_layer)
    widget.saving.close()  # what closing napari does: the folder is released

    npe2.PluginManager.instance().discover(include_npe1=False)
    widget.saving.panel.folder = None
    (reopened,) = viewer.open(str(folder), plugin="napari-mobilesam")
    widget.set_labels_layer(reopened)
    assert widget.saving.panel.folder == folder  # taken from the layer
    points.add([[30, 40]])
    assert widget.segment_and_commit() == [2]
    assert [r["step"] for r in _records(folder)] == [1, 2]
    with ProjectStore.open(folder, writable=False) as store:
        assert np.array_equal(store.read_labels(), reopened.data)


def test_a_disk_that_fills_up_later_is_reported_once(
    docked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer, image, widget = docked
    warnings: list[str] = []
    monkeypatch.setattr(project_saving, "show_warning", warnings.append)
    monkeypatch.setattr("napari_mobilesam.layers.project_recorder._napari_warning", warnings.append)
    folder = tmp_path / "p.mobilesam"
    widget.saving.panel.folder = folder
    points, _ = widget.create_prompt_layers()
    points.add([[10, 20]])
    assert widget.segment_and_commit() == [1]

    def full(target, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(project_store, "write_bytes_atomically", full)
    for number, point in enumerate(([30, 40], [5, 5]), start=2):
        points.add([point])
        assert widget.segment_and_commit() == [number]
    assert len(warnings) == 1 and "disk is full" in warnings[0]
    monkeypatch.undo()
    assert [r["step"] for r in _records(folder)] == [1]
