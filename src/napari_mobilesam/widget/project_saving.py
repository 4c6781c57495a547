"""The widget's "Save to" section: every write into the Labels layer saved in a project folder.

When a folder is set, the first write (a commit, a propagation, segment everything) starts a
:class:`~napari_mobilesam.layers.project_recorder.ProjectRecorder` on the target Labels layer,
or continues the project already in that folder when the layer holds its labels (opened with
File > Open on the folder). From then on every write, napari edit, undo and redo is saved
before the write reports success.

A folder that cannot be used (read-only, full disk, another writer, a project of other labels)
is reported once, as a notification and in the section; the work itself stays in napari.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import FileEdit, Label, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning

from napari_mobilesam.engine.project_store import (
    ProjectError,
    ProjectStore,
    ProjectWriteError,
    is_project,
)
from napari_mobilesam.layers.project_recorder import (
    PROJECT_METADATA_KEY,
    ModelInfo,
    ProjectRecorder,
    open_project,
    suggested_folder,
)
from napari_mobilesam.widget.sections import FormSection

if TYPE_CHECKING:
    from napari_mobilesam.engine.predictor_loader import PredictorLoader

NOT_SAVING = "not saving (napari does not save Labels by itself)"


class ProjectPanel(FormSection):
    """The folder field, a button that fills in the suggestion beside the image, a state line."""

    def __init__(self, expanded: bool = False) -> None:
        super().__init__("Save to project", expanded=expanded)
        self.folder_edit = FileEdit(
            mode="d",
            value="",
            tooltip="A folder that receives the labels and a record of every commit, undo and "
            "edit, as they happen (zarr + JSON). Empty: nothing is saved.",
        )
        self.suggest_button = PushButton(text="beside the image file", enabled=False)
        self.state_label = Label(value=NOT_SAVING)
        self.add_rows(
            [
                ("save to", self.folder_edit),
                (None, self.suggest_button),
                (None, self.state_label),
            ]
        )

    @property
    def folder(self) -> Path | None:
        """The chosen folder, or None when the field is empty."""
        # The text itself: FileEdit's value turns an emptied field into a folder.
        text = str(self.folder_edit.line_edit.value).strip()
        return None if text in ("", ".") else Path(text).expanduser()

    @folder.setter
    def folder(self, value: str | Path | None) -> None:
        self.folder_edit.line_edit.value = "" if value is None else str(value)


class ProjectSaving:
    """Keeps one recorder for the widget's target Labels layer and the chosen folder.

    Args:
        loader: the widget's predictor loader (which weights, runtime and device wrote).
    """

    def __init__(self, loader: PredictorLoader) -> None:
        self.loader = loader
        self.panel = ProjectPanel()
        self.recorder: ProjectRecorder | None = None
        self._suggestion: Path | None = None
        self._refused: tuple[Any, ...] | None = None  # (folder, layer id) already reported
        self.panel.suggest_button.changed.connect(self._use_suggestion)
        self.panel.folder_edit.changed.connect(self._folder_changed)

    # ------------------------------------------------------------------ the widget's calls
    def image_changed(self, image: Image | None) -> None:
        """Offer the folder beside the image's file, if it came from one."""
        self._suggestion = suggested_folder(image)
        button = self.panel.suggest_button
        button.enabled = self._suggestion is not None
        button.tooltip = str(self._suggestion or "the image did not come from a file")

    def labels_changed(self, labels: Labels | None) -> None:
        """A layer opened from a project folder (File > Open) continues that project."""
        folder = None if labels is None else labels.metadata.get(PROJECT_METADATA_KEY)
        if folder and self.panel.folder is None:
            self.panel.folder = folder

    def attach(self, labels: Labels, image: Image) -> None:
        """Before a write into ``labels``: make sure a recorder saves it (never raises)."""
        folder = self.panel.folder
        recorder = self.recorder
        if folder is None:
            self.close()
            return
        current = recorder is not None and recorder.labels is labels and recorder.saving
        if current and recorder.store.folder == folder:
            self._update_model(recorder)
            return
        self.close()
        key = (str(folder), id(labels))
        if self._refused == key:
            return  # said once already; the work stays in napari
        try:
            self.recorder = self._recorder_for(labels, image, folder)
        except (ProjectError, ProjectWriteError) as exc:
            self._refused = key
            self._report(f"not saving: {exc}")
            return
        self._update_model(self.recorder)
        self.panel.state_label.value = f"saving to {folder}"

    def close(self) -> None:
        """Stop saving (the folder keeps everything saved so far) and release the folder."""
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
            self.panel.state_label.value = NOT_SAVING

    # ------------------------------------------------------------------ internals
    def _recorder_for(self, labels: Labels, image: Image, folder: Path) -> ProjectRecorder:
        if not is_project(folder):
            return ProjectRecorder.start(labels, folder, image=image, notify=self._failed)
        with ProjectStore.open(folder, writable=False) as store:
            same = store.shape == tuple(np.shape(labels.data)) and np.array_equal(
                store.read_labels(), np.asarray(labels.data)
            )
        if not same:
            raise ProjectError(
                f"{folder} holds a project whose labels differ from layer '{labels.name}'. "
                "Open the folder (File > Open) to continue it, or choose another folder."
            )
        return open_project(folder, notify=self._failed, labels=labels)[1]

    def _update_model(self, recorder: ProjectRecorder) -> None:
        source = self.loader.source
        model = recorder.model
        if source is not None and model.weights != source:
            recorder.model = ModelInfo(source, self.loader.runtime, self.loader.device)
        elif source is not None:
            model.runtime, model.device = self.loader.runtime, self.loader.device

    def _failed(self, message: str) -> None:
        """A save failed after saving had begun: said once; no new recorder for this folder
        and layer (it would only fail again, or refuse the labels the folder lacks)."""
        recorder = self.recorder
        if recorder is not None and recorder.store is not None:
            self._refused = (str(recorder.store.folder), id(recorder.labels))
        self._report(message.removeprefix("MobileSAM: "))

    def _report(self, message: str) -> None:
        self.panel.state_label.value = message if len(message) < 160 else message[:157] + "..."
        self.panel.state_label.tooltip = message
        show_warning(f"MobileSAM: {message}")

    def _use_suggestion(self, *_: Any) -> None:
        if self._suggestion is not None:
            self.panel.folder = self._suggestion

    def _folder_changed(self, *_: Any) -> None:
        self._refused = None
        self.close()
        folder = self.panel.folder
        self.panel.state_label.value = (
            NOT_SAVING if folder is None else f"will save to {folder} from the next commit"
        )
