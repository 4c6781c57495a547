"""Opening a project folder in napari gives its Labels layer back (npe2 reader)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_mobilesam.engine.project_store import ProjectError, ProjectStore
from napari_mobilesam.layers.project_reader import get_reader
from napari_mobilesam.layers.project_recorder import PROJECT_METADATA_KEY


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "cells.mobilesam"
    placement = {"scale": [2.0, 0.5, 0.5], "translate": [0.0, 10.0, 20.0]}
    image = {"name": "cells", "path": None, "rgb": False}
    with ProjectStore.create(folder, (3, 8, 9), image=image, placement=placement) as store:
        plane = np.zeros((8, 9), np.uint32)
        plane[2:4, 2:5] = 1
        store.write_step({(1,): plane}, {"kind": "write", "objects": [{"id": 1}]})
    return folder


def test_napari_opens_a_project_folder_as_its_labels_layer(project: Path) -> None:
    import npe2

    # napari's window discovers the installed plugins at start; a bare ViewerModel does not.
    npe2.PluginManager.instance().discover(include_npe1=False)
    viewer = ViewerModel()
    (layer,) = viewer.open(str(project), plugin="napari-mobilesam")
    assert layer.name == "cells labels"
    assert layer.data.shape == (3, 8, 9) and layer.data[1].sum() == 6
    assert list(layer.scale) == [2.0, 0.5, 0.5] and list(layer.translate) == [0.0, 10.0, 20.0]
    assert layer.metadata[PROJECT_METADATA_KEY] == str(project)
    # The manifest file names the project too; other folders and files are not claimed.
    assert get_reader(str(project / "project.json")) is not None
    assert get_reader(str(project.parent)) is None
    assert get_reader(str(project / "labels.zarr")) is None


def test_a_project_of_another_format_version_is_refused(project: Path) -> None:
    manifest = json.loads((project / "project.json").read_text())
    manifest["format_version"] = 99
    (project / "project.json").write_text(json.dumps(manifest))
    reader = get_reader(str(project))
    with pytest.raises(ProjectError, match="format version 99"):
        reader(str(project))
