"""Controls of the widget's 3D section: walk axis, stop rules, Propagate and Precompute."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)

from napari_mobilesam.engine.propagation import PROMPT_MODES, PropagationSettings

AUTO_AXIS = "auto (Z)"


class StackPanel(Container):
    """The 3D controls; the widget owns the work they start."""

    def __init__(self) -> None:
        super().__init__(labels=True)
        defaults = PropagationSettings()
        self._axis_combo = ComboBox(label="walk axis", choices=[(AUTO_AXIS, None)], value=None)
        self._range_spin = SpinBox(
            label="planes each way", value=0, min=0, max=100_000,
            tooltip="Stop after this many planes up and down (0: no limit).",
        )  # fmt: skip
        self._iou_spin = FloatSpinBox(
            label="min IoU", value=defaults.min_iou, min=0.0, max=1.0, step=0.05,
            tooltip="Stop where the mask overlaps the previous plane's less than this.",
        )  # fmt: skip
        self._area_spin = FloatSpinBox(
            label="max area change", value=defaults.max_area_ratio, min=1.0, max=100.0, step=0.5,
            tooltip="Stop where the area grows or shrinks by more than this factor.",
        )  # fmt: skip
        self._empty_spin = SpinBox(
            label="empty planes", value=defaults.max_empty, min=1, max=100,
            tooltip="Stop after this many empty planes in a row.",
        )  # fmt: skip
        self._prompt_combo = ComboBox(
            label="next-plane prompt", choices=list(PROMPT_MODES), value=defaults.prompt
        )
        self._propagate_button = PushButton(text="Propagate through stack (Shift+P)")
        self._precompute_button = PushButton(text="Precompute embeddings")
        self._disk_check = CheckBox(
            text="keep embeddings on disk",
            value=False,
            tooltip="Reopening the same data later loads embeddings instead of encoding.",
        )
        self._stack_status = Label(label="3D", value="-")
        self.extend(
            [
                self._axis_combo,
                self._range_spin,
                self._iou_spin,
                self._area_spin,
                self._empty_spin,
                self._prompt_combo,
                self._propagate_button,
                self._precompute_button,
                self._disk_check,
                self._stack_status,
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

    def set_stack_status(self, text: str) -> None:
        self._stack_status.value = text
