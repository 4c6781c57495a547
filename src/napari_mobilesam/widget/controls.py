"""The controls of the MobileSAM dock widget and the values they hold.

:class:`MobileSAMControls` only builds the controls and exposes their values and setters;
:class:`napari_mobilesam.widget.dock_widget.MobileSAMWidget` adds the behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton
from napari.layers import Image, Labels, Layer, Points, Shapes

from napari_mobilesam.engine.predictor_loader import DEVICE_CHOICES, weights_path

POSITIVE_CHOICE = "positive (object)"
NEGATIVE_CHOICE = "negative (background)"
CREATE_NEW = "create new"
NO_LAYER = "none"

# Short lines keep the dock narrow, leaving the width to the canvas.
HELP_TEXT = (
    "Points layer (add mode): click an object;\n"
    "negative points mark background.\n"
    "Boxes layer: draw rectangles (R). Points\n"
    "inside a box refine that box's object;\n"
    "points outside all boxes are one more object.\n"
    "N  new points positive / negative\n"
    "J  next candidate mask\n"
    "K  commit (one undo step)\n"
    "Shift+R  clear this plane's prompts"
)


class MobileSAMControls(Container):
    """Layer choices, model settings, switches, buttons and read-outs of the widget."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self._image_combo = ComboBox(label="image", choices=self._choices(Image))
        self._points_combo = ComboBox(label="points", choices=self._choices(Points, NO_LAYER))
        self._shapes_combo = ComboBox(label="boxes", choices=self._choices(Shapes, NO_LAYER))
        self._labels_combo = ComboBox(label="labels", choices=self._choices(Labels, CREATE_NEW))
        self._make_prompts_button = PushButton(text="Create prompt layers")
        self._polarity_combo = ComboBox(
            label="new points", choices=[POSITIVE_CHOICE, NEGATIVE_CHOICE]
        )
        # Nullable: an empty field reads as None (a plain FileEdit would read as the cwd).
        self._weights_edit = FileEdit(
            label="weights", mode="r", filter="MobileSAM weights (*.pt *.pth)", nullable=True
        )
        # Says which weights file will be used and why (field, environment, cache, download).
        self._weights_warning = Label(value="")
        self._device_combo = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self._live_check = CheckBox(text="live preview", value=True)
        self._multimask_check = CheckBox(text="multimask (3 candidates)", value=True)
        self._protect_check = CheckBox(text="protect existing labels", value=True)
        self._segment_button = PushButton(text="Segment")
        self._commit_button = PushButton(text="Commit")
        self._cancel_button = PushButton(text="Cancel")
        self._reset_button = PushButton(text="Reset")
        buttons = Container(
            layout="horizontal",
            labels=False,
            widgets=[
                self._segment_button,
                self._commit_button,
                self._cancel_button,
                self._reset_button,
            ],
        )
        self._status_label = Label(label="status", value="ready")
        # Long status messages wrap instead of widening the dock and squeezing the canvas.
        self._status_label.native.setWordWrap(True)
        self._device_label = Label(label="device", value="not loaded yet")
        self._timing_label = Label(label="timing", value="-")
        self._scores_label = Label(label="scores", value="-")
        self._help_label = Label(value=HELP_TEXT)
        self.extend(
            [
                self._image_combo,
                self._points_combo,
                self._shapes_combo,
                self._make_prompts_button,
                self._polarity_combo,
                self._labels_combo,
                self._weights_edit,
                self._weights_warning,
                self._device_combo,
                self._live_check,
                self._multimask_check,
                self._protect_check,
                buttons,
                self._status_label,
                self._device_label,
                self._timing_label,
                self._scores_label,
                self._help_label,
            ]
        )
        self._weights_edit.changed.connect(self._update_weights_warning)
        self._update_weights_warning()

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
        self._weights_warning.value = weights_status(self.weights)

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


def weights_status(path: Path | None) -> str:
    """One or two lines for the widget: which weights will be used, or what is wrong."""
    from napari_mobilesam.engine.weights import WEIGHTS_SIZE, describe_resolution

    try:
        source = describe_resolution(path)
    except (OSError, RuntimeError) as exc:
        return f"weights: {exc}".split("\n")[0]
    if source.needs_download:
        return f"weights: will download mobile_sam.pt\n({WEIGHTS_SIZE / 1e6:.1f} MB) on first use"
    if source.kind == "explicit path":
        return ""
    return f"weights: {source.kind}\n{source.path}"
