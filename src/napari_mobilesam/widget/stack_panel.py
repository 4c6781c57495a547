"""Controls of the widget's 3D section: walk axis, stop rules, Propagate and Precompute."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox

from napari_mobilesam.engine.propagation import PROMPT_MODES, PropagationSettings
from napari_mobilesam.widget.sections import FormSection

AUTO_AXIS = "auto (Z)"


class StackPanel(FormSection):
    """The 3D controls; the widget owns the work they start (its messages go to the status line)."""

    def __init__(self, expanded: bool = False) -> None:
        super().__init__("3D stack", expanded=expanded)
        defaults = PropagationSettings()
        self._axis_combo = ComboBox(choices=[(AUTO_AXIS, None)], value=None)
        self._range_spin = SpinBox(
            value=0, min=0, max=100_000,
            tooltip="Walk at most this many planes up and down (0: no limit).",
        )  # fmt: skip
        self._iou_spin = FloatSpinBox(
            value=defaults.min_iou, min=0.0, max=1.0, step=0.05,
            tooltip="Stop where the mask overlaps the previous plane's less than this.",
        )  # fmt: skip
        self._area_spin = FloatSpinBox(
            value=defaults.max_area_ratio, min=1.0, max=100.0, step=0.5,
            tooltip="Stop where the area grows or shrinks by more than this factor (max).",
        )  # fmt: skip
        self._empty_spin = SpinBox(
            value=defaults.max_empty, min=1, max=100,
            tooltip="Stop after this many empty planes in a row.",
        )  # fmt: skip
        self._prompt_combo = ComboBox(
            choices=list(PROMPT_MODES), value=defaults.prompt,
            tooltip="What each next plane is prompted with, from the previous plane's mask.",
        )  # fmt: skip
        self._propagate_button = PushButton(
            text="Propagate (Shift+P)",
            tooltip="Follow the previewed objects up and down the stack; one undo step.",
        )
        self._precompute_button = PushButton(
            text="Precompute embeddings",
            tooltip="Encode the planes nearest this one in the background; clicks go first.",
        )
        self._disk_check = CheckBox(
            text="keep embeddings on disk",
            value=False,
            tooltip="Reopening the same data later loads embeddings instead of encoding.",
        )
        self.add_rows(
            [
                ("walk axis", self._axis_combo),
                ("planes ±", self._range_spin),
                ("min IoU", self._iou_spin),
                ("area change", self._area_spin),
                ("empty planes", self._empty_spin),
                ("prompt with", self._prompt_combo),
                (None, self._propagate_button),
                (None, self._precompute_button),
                (None, self._disk_check),
            ]
        )

    def set_axis_choices(self, axes: list[tuple[str, int]]) -> None:
        """Offer the image's non-displayed axes as (label, data axis) pairs."""
        current = self._axis_combo.value
        choices: list[tuple[str, Any]] = [(AUTO_AXIS, None), *axes]
        self._axis_combo.choices = choices
        if current in [value for _, value in choices]:
            self._axis_combo.value = current

    @property
    def walk_axis(self) -> int | None:
        """The chosen data axis, or None for the default (the last non-displayed axis)."""
        return self._axis_combo.value

    def settings(self, start: int, n_planes: int) -> PropagationSettings:
        """Propagation settings from the controls, for a walk from plane ``start``."""
        each_way = int(self._range_spin.value)
        plane_range = (
            (max(0, start - each_way), min(n_planes - 1, start + each_way)) if each_way else None
        )
        return PropagationSettings(
            prompt=self._prompt_combo.value,
            min_iou=float(self._iou_spin.value),
            max_area_ratio=float(self._area_spin.value),
            max_empty=int(self._empty_spin.value),
            plane_range=plane_range,
        )
