"""napari reader for project folders: File > Open a ``*.mobilesam`` folder (or its
``project.json``) to get its Labels layer back, placed like the image it was made on.

The layer's ``metadata["napari-mobilesam project"]`` names the folder; choosing that layer in
the MobileSAM widget with the same "save to" folder continues the project (further steps are
appended). Reading does not take the folder's lock and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_mobilesam.engine.project_store import MANIFEST_NAME, ProjectStore, is_project
from napari_mobilesam.layers.project_recorder import layer_kwargs

LayerData = tuple[Any, dict[str, Any], str]


def project_folder(path: Any) -> Path | None:
    """The project folder ``path`` names (the folder or its manifest), or None."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path))
    if path.name == MANIFEST_NAME:
        path = path.parent
    return path if path.is_dir() and is_project(path) else None


def get_reader(path: Any) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: :func:`read_project` for a project folder, else None."""
    return read_project if project_folder(path) is not None else None


def read_project(path: Any) -> list[LayerData]:
    """The project's labels as napari layer data.

    Raises:
        ProjectError: another format version, a broken record, a record naming a missing
            plane (napari shows the message).
    """
    folder = project_folder(path)
    if folder is None:
        raise ValueError(f"{path} is not a napari-mobilesam project folder.")
    with ProjectStore.open(folder, writable=False) as store:
        data = store.read_labels()
        kwargs = layer_kwargs(store.manifest, folder)
    return [(data, kwargs, "labels")]
