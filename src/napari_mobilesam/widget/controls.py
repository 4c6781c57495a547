"""The controls of the MobileSAM dock widget and the values they hold.

:class:`MobileSAMControls` only builds the controls, lays them out in sections and exposes their
values and setters; :class:`napari_mobilesam.widget.dock_widget.MobileSAMWidget` adds the
behaviour.

Top to bottom: the layers-and-prompts section, the action buttons, the status lines (always in
view), the model section, the panels the widget adds (3D, ...), and the Keys section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton
from napari.layers import Image, Labels, Layer, Points, Shapes
from qtpy.QtWidgets import QGridLayout, QWidget

from napari_mobilesam.engine.predictor_loader import DEVICE_CHOICES, weights_path
from napari_mobilesam.engine.runtime_status import available_runtimes
from napari_mobilesam.widget.sections import (
    ElidedLabel,
    FormSection,
    ScrollColumn,
    breakable,
    wrapping_label,
)

POSITIVE_CHOICE = "positive (object)"
NEGATIVE_CHOICE = "negative (background)"
CREATE_NEW = "create new"
NO_LAYER = "none"

# The Keys section: (key, what it does). The keys themselves are bound by the dock widget.
KEY_HELP = (
    ("click", "add a point"),
    ("R", "draw a box"),
    ("N", "object/background"),
    ("J", "next candidate"),
    ("K", "commit (one undo)"),
    ("Shift+R", "clear this plane"),
    ("Shift+P", "propagate (3D)"),
    ("Shift+O", "one object per point"),
)

WEIGHTS_HELP = "Empty: the environment variable, the cache, then a download."

PROMPTS_HELP = (
    "Points layer (add mode): click an object; negative points mark background.\n"
    "Boxes layer: draw rectangles (R). Points inside a box refine that box's object;\n"
    "points outside all boxes are one more object."
)


class MobileSAMControls(Container):
    """Layer choices, model settings, switches, buttons and read-outs of the widget."""

    # Set by the dock widget once it is torn down; its Qt controls may be gone by then.
    _closed = False

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self.viewer = viewer
        self._image_combo = ComboBox(choices=self._choices(Image))
        self._points_combo = ComboBox(choices=self._choices(Points, NO_LAYER))
        self._shapes_combo = ComboBox(choices=self._choices(Shapes, NO_LAYER))
        self._labels_combo = ComboBox(
            choices=self._choices(Labels, CREATE_NEW),
            tooltip="Commits go here; 'create new' adds a Labels layer aligned to the image.",
        )
        self._make_prompts_button = PushButton(text="Create prompt layers", tooltip=PROMPTS_HELP)
        self._polarity_combo = ComboBox(
            choices=[POSITIVE_CHOICE, NEGATIVE_CHOICE], tooltip="N switches between the two."
        )
        # Nullable: an empty field reads as None (a plain FileEdit would read as the cwd).
        self._weights_edit = FileEdit(
            mode="r", filter="MobileSAM weights (*.pt *.pth)", nullable=True,
            tooltip=WEIGHTS_HELP,
        )  # fmt: skip
        self._device_combo = ComboBox(choices=list(DEVICE_CHOICES), value="auto")
        runtimes, runtime_help = _runtime_choices()
        self._runtime_combo = ComboBox(choices=runtimes, value="torch", tooltip=runtime_help)
        self._live_check = CheckBox(text="live preview", value=True)
        self._multimask_check = CheckBox(text="multimask (3 candidates, J)", value=True)
        self._each_point_check = CheckBox(
            text="one object per point (Shift+O)", value=False,
            tooltip="Each positive point outside the boxes is its own object; negative points "
            "are background for all of them. Where objects overlap, the higher score keeps "
            "the pixel.",
        )  # fmt: skip
        self._protect_check = CheckBox(text="protect existing labels", value=True)
        self._segment_button = PushButton(text="Segment", tooltip="Segment this plane now.")
        self._commit_button = PushButton(
            text="Commit", tooltip="Write the objects into the labels layer (K)."
        )
        self._cancel_button = PushButton(text="Cancel", tooltip="Stop the running work.")
        self._reset_button = PushButton(
            text="Reset", tooltip="Remove this plane's prompts (Shift+R)."
        )
        # Read-outs: long texts wrap instead of widening the dock and squeezing the canvas.
        self._status_label = wrapping_label("ready")
        self._scores_label = wrapping_label("-")
        # Paths and file names: one line, elided in the middle, the whole text in the tooltip.
        self._device_label = ElidedLabel("not loaded yet")
        self._timing_label = wrapping_label("-")
        # Says which weights file will be used and why (field, environment, cache, download).
        self._weights_warning = wrapping_label("")
        self._weights_file = ElidedLabel("")  # the file itself, under the line above

        self.prompts_section = FormSection("Layers and prompts")
        self.prompts_section.add_rows(
            [
                ("image", self._image_combo),
                ("points", self._points_combo),
                ("boxes", self._shapes_combo),
                (None, self._make_prompts_button),
                ("new points", self._polarity_combo),
                (None, self._each_point_check),
                ("labels", self._labels_combo),
                (None, self._live_check),
                (None, self._multimask_check),
                (None, self._protect_check),
            ]
        )
        self.status_section = FormSection("Status", collapsible=False)
        self.status_section.add_rows(
            [
                ("status", self._status_label),
                ("scores", self._scores_label),
                ("device", self._device_label),
                ("timing", self._timing_label),
                ("weights", self._weights_warning),
                (None, self._weights_file),
            ]
        )
        self.model_section = FormSection("Model")
        self.model_section.add_rows(
            [
                ("weights", self._weights_edit),
                ("device", self._device_combo),
                ("runtime", self._runtime_combo),
            ]
        )
        self.keys_section = FormSection("Keys", expanded=False)
        self.keys_section.add_rows((key, wrapping_label(text)) for key, text in KEY_HELP)

        self._sections: list[FormSection] = []
        self._column = ScrollColumn()
        self.native.layout().addWidget(self._column)
        self.add_section(self.prompts_section)
        self._column.add(_button_grid(
            self._segment_button, self._commit_button, self._cancel_button, self._reset_button
        ))  # fmt: skip
        self.add_section(self.status_section)
        self.add_section(self.model_section)

        self._weights_edit.changed.connect(self._update_weights_warning)
        self._update_weights_warning()

    # ------------------------------------------------------------------ layout
    @property
    def sections(self) -> list[FormSection]:
        """The widget's sections, top to bottom."""
        return list(self._sections)

    def add_section(self, section: FormSection) -> None:
        """Append ``section`` to the column; its labels line up with the other sections'."""
        self._sections.append(section)
        self._column.add(section)

    def finish_layout(self) -> None:
        """Add the Keys section last."""
        self.add_section(self.keys_section)

    def reset_choices(self, *_: Any) -> None:
        """Refresh every layer choice (the viewer's layers changed)."""
        if self._closed:
            return  # napari may still call this after its window (and the combo boxes) went
        for section in self._sections:
            section.reset_choices()

    def _choices(self, kind: type[Layer], empty: str | None = None) -> Callable[[Any], list]:
        """Choices callable for a layer combo box: the viewer's layers of one type."""

        def choices(_widget: Any) -> list[tuple[str, Layer | None]]:
            found: list[tuple[str, Layer | None]] = [(empty, None)] if empty else []
            found += [
                (layer.name, layer)
                for layer in self.viewer.layers
                if isinstance(layer, kind) and layer is not self._hidden_layer()
            ]
            return found

        return choices

    def _hidden_layer(self) -> Layer | None:
        """A layer the layer choices leave out (the widget's own preview layer)."""
        return None

    def _update_weights_warning(self, *_: Any) -> None:
        line, path, details = weights_status(self.weights)
        self._weights_warning.value = breakable(line)
        self._weights_warning.tooltip = details
        self._weights_file.value = "" if path is None else str(path)
        self._weights_file.setVisible(path is not None)
        # The field shows the end of a long path at best: the whole path in its tooltip.
        chosen = self.weights
        self._weights_edit.tooltip = str(chosen) if chosen is not None else WEIGHTS_HELP

    def _set_combo(self, combo: ComboBox, layer: Layer | None) -> None:
        if layer is not None and layer not in self.viewer.layers:
            raise ValueError(f"layer '{layer.name}' is not in this viewer; add it first.")
        combo.reset_choices()
        combo.value = layer

    # ------------------------------------------------------------------ layers
    @property
    def image_layer(self) -> Image | None:
        """The image being segmented."""
        return self._image_combo.value

    @property
    def points_layer(self) -> Points | None:
        """The Points layer read for point prompts (``None``: no points)."""
        return self._points_combo.value

    @property
    def shapes_layer(self) -> Shapes | None:
        """The Shapes layer whose rectangles are box prompts (``None``: no boxes)."""
        return self._shapes_combo.value

    @property
    def labels_layer(self) -> Labels | None:
        """The Labels layer commits write to (``None``: one is created on the first commit)."""
        return self._labels_combo.value

    def set_image_layer(self, layer: Image) -> None:
        """Segment ``layer`` (it must be in the viewer)."""
        self._set_combo(self._image_combo, layer)

    def set_prompt_layers(self, points: Points | None = None, shapes: Shapes | None = None) -> None:
        """Read point prompts from ``points`` and box prompts from ``shapes`` (``None``: none)."""
        self._set_combo(self._points_combo, points)
        self._set_combo(self._shapes_combo, shapes)

    def set_labels_layer(self, layer: Labels | None) -> None:
        """Commit into ``layer``; ``None`` creates a new Labels layer on the next commit."""
        self._set_combo(self._labels_combo, layer)

    # ------------------------------------------------------------------ settings
    @property
    def weights(self) -> Path | None:
        """The weights file, or ``None`` for automatic (environment, cache, then download)."""
        return weights_path(self._weights_edit.value)

    def set_weights(self, path: str | Path | None) -> None:
        """Use the weights file at ``path`` (``None``: automatic, see the README's Weights)."""
        self._weights_edit.value = None if path is None else Path(path)

    @property
    def device(self) -> str:
        """The device choice: ``auto`` (CUDA, then MPS, then CPU), ``cuda``, ``mps``, ``cpu``."""
        return str(self._device_combo.value)

    @device.setter
    def device(self, value: str) -> None:
        self._device_combo.value = value

    @property
    def runtime(self) -> str:
        """What runs the image encoder: ``torch``, ``auto`` (the fastest installed runtime that
        passes its self-check on a CPU), ``onnxruntime`` or ``openvino`` (when installed)."""
        return str(self._runtime_combo.value)

    @runtime.setter
    def runtime(self, value: str) -> None:
        self._runtime_combo.value = value

    @property
    def live(self) -> bool:
        """Whether prompt edits re-segment automatically."""
        return bool(self._live_check.value)

    @live.setter
    def live(self, value: bool) -> None:
        self._live_check.value = bool(value)

    @property
    def multimask(self) -> bool:
        """Whether SAM proposes three candidates per object."""
        return bool(self._multimask_check.value)

    @multimask.setter
    def multimask(self, value: bool) -> None:
        self._multimask_check.value = bool(value)

    @property
    def each_point(self) -> bool:
        """Whether every positive point outside the boxes is its own object."""
        return bool(self._each_point_check.value)

    @each_point.setter
    def each_point(self, value: bool) -> None:
        self._each_point_check.value = bool(value)

    @property
    def protect(self) -> bool:
        """Whether commits keep existing labels (write only where the layer is 0)."""
        return bool(self._protect_check.value)

    @protect.setter
    def protect(self, value: bool) -> None:
        self._protect_check.value = bool(value)

    @property
    def new_points_positive(self) -> bool:
        """Whether new points mark the object (else background)."""
        return self._polarity_combo.value == POSITIVE_CHOICE

    @new_points_positive.setter
    def new_points_positive(self, value: bool) -> None:
        self._polarity_combo.value = POSITIVE_CHOICE if value else NEGATIVE_CHOICE


def weights_status(path: Path | None) -> tuple[str, Path | None, str]:
    """Which weights will be used, or what is wrong: a short sentence for the widget, the file
    (shown on its own line, elided in the middle), and the whole story for a tooltip."""
    from napari_mobilesam.engine.weights import WEIGHTS_SIZE, describe_resolution

    try:
        source = describe_resolution(path)
    except (OSError, RuntimeError) as exc:
        text = str(exc)
        return text.split("\n")[0], None, text
    if source.needs_download:
        line = f"first use downloads {WEIGHTS_SIZE / 1e6:.1f} MB to"
    elif source.kind == "explicit path":
        line = "the file chosen under Model"
    elif source.kind == "cache":
        line = "from the cache"
    else:
        # A break opportunity (zero-width space) after each "_": the name may wrap.
        line = "from the environment variable " + source.kind.replace("_", "_\u200b")
    return line, source.path, f"{source.path}\n{source.reason}"


def _button_grid(*buttons: PushButton, columns: int = 2) -> QWidget:
    """The action buttons in a grid: one row of four would set the dock's minimum width."""
    grid = QWidget()
    layout = QGridLayout(grid)
    layout.setContentsMargins(0, 0, 0, 0)
    for index, button in enumerate(buttons):
        layout.addWidget(button.native, index // columns, index % columns)
    return grid


def _runtime_choices() -> tuple[list[str], str]:
    """The encoder runtimes this installation can offer, and a tooltip that names the extra
    for each missing one (checked without importing torch or the runtimes)."""
    statuses = available_runtimes()
    choices = ["torch", "auto"] + [n for n, s in statuses.items() if n != "torch" and s.available]
    lines = [
        "What runs the image encoder. torch: the default. auto: the fastest installed runtime",
        "that agrees with torch on a one-time check (its graph is built once, then cached).",
    ]
    lines += [f"{name}: {status.reason}" for name, status in statuses.items() if status.reason]
    return choices, "\n".join(lines)
