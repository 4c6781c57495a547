"""Controls of the widget's "Segment everything" section: the prompt grid, the filters, tiles,
current plane or whole stack, and the buttons that start and cancel a run."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox
from qtpy.QtWidgets import QHBoxLayout, QWidget

from napari_mobilesam.layers.everything_layers import (
    AUTO_TILE,
    CPU_DEFAULTS,
    SAM_DEFAULTS,
    EverythingSettings,
)
from napari_mobilesam.widget.sections import FormSection

CURRENT_PLANE = "current plane"
# Tile sizes offered: 0 is automatic (see EverythingSettings.tile_size), None never tiles.
TILE_CHOICES = [("auto", 0), ("off", None), ("512 px", 512), ("1024 px", 1024), ("2048 px", 2048)]
WHOLE_STACK = "whole stack"


def _side_by_side(left: PushButton, right: PushButton) -> QWidget:
    """Two buttons in one row, sharing the width (the section stays short)."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(left.native)
    layout.addWidget(right.native)
    return row


def _describe(settings: EverythingSettings) -> str:
    return (
        f"{settings.points_per_side} points per side, IoU {settings.pred_iou_thresh}, "
        f"stability {settings.stability_score_thresh}"
    )


def _bf16_support() -> tuple[bool, str]:
    """Whether this CPU multiplies bfloat16 natively (its flags), and why not if it does not."""
    from napari_mobilesam.engine.runtime_status import bf16_supported

    return bf16_supported()


class EverythingPanel(FormSection):
    """The automatic segmentation controls; :class:`EverythingRunner` owns the work."""

    def __init__(self, expanded: bool = False) -> None:
        super().__init__("Segment everything", expanded=expanded)
        self._points_spin = SpinBox(
            min=1, max=128,
            tooltip="Prompts per side of the grid (per tile): n x n prompts. More finds smaller "
            "objects and takes longer (32 is segment-anything's default).",
        )  # fmt: skip
        self._iou_spin = FloatSpinBox(
            min=0.0, max=1.0, step=0.01,
            tooltip="Keep masks whose predicted IoU is above this (0 keeps all).",
        )  # fmt: skip
        self._stability_spin = FloatSpinBox(
            min=0.0, max=1.0, step=0.01,
            tooltip="Keep masks that change little when the mask threshold moves (0 keeps all).",
        )  # fmt: skip
        self._min_size_spin = SpinBox(
            min=0, max=10_000_000,
            tooltip="Drop objects with fewer pixels than this (per plane).",
        )  # fmt: skip
        self._tile_combo = ComboBox(
            choices=TILE_CHOICES, value=0,
            tooltip=f"Cut planes into tiles, each seen at full resolution (small objects in "
            f"large images). auto: whole planes up to {AUTO_TILE} px, {AUTO_TILE} px tiles "
            "for larger ones.",
        )  # fmt: skip
        self._scope_combo = ComboBox(
            choices=[CURRENT_PLANE, WHOLE_STACK], value=CURRENT_PLANE,
            tooltip="The plane on screen, or every plane along the stack axis (Z), with objects "
            "linked from plane to plane into 3D ids.",
        )  # fmt: skip
        # bf16 is offered only where the CPU multiplies it natively (read from its flags, no
        # torch import while the widget is built); elsewhere it would be slower than float32.
        self._bf16_check = CheckBox(text="bf16 decoder", value=False)
        self._bf16_check.tooltip = (
            "Decode the prompts in bfloat16: about 1.4x quicker on CPUs with native bf16, with "
            "predicted IoU within 0.03 and masks within IoU 0.97 of float32."
        )
        supported, why = _bf16_support()
        if not supported:
            self._bf16_check.enabled = False
            self._bf16_check.tooltip = f"Not offered here: {why}."
        self._cpu_button = PushButton(
            text="CPU defaults", tooltip=f"Quicker on a CPU: {_describe(CPU_DEFAULTS)}."
        )
        self._sam_button = PushButton(
            text="SAM defaults", tooltip=f"segment-anything's defaults: {_describe(SAM_DEFAULTS)}."
        )
        self._run_button = PushButton(
            text="Segment everything",
            tooltip="Segment every object into the labels layer (one undo step).",
        )
        self._cancel_button = PushButton(text="Cancel", tooltip="Stop; nothing is written.")
        self._cancel_button.enabled = False
        self.add_rows(
            [
                ("points/side", self._points_spin),
                ("min IoU", self._iou_spin),
                ("stability", self._stability_spin),
                ("min size", self._min_size_spin),
                ("tiles", self._tile_combo),
                ("planes", self._scope_combo),
                (None, self._bf16_check),
                (None, _side_by_side(self._cpu_button, self._sam_button)),
                (None, _side_by_side(self._run_button, self._cancel_button)),
            ]
        )
        self.set_settings(CPU_DEFAULTS)
        self._cpu_button.changed.connect(lambda *_: self.apply_defaults(CPU_DEFAULTS))
        self._sam_button.changed.connect(lambda *_: self.apply_defaults(SAM_DEFAULTS))

    def apply_defaults(self, defaults: EverythingSettings) -> None:
        """Set the grid and the two thresholds from ``defaults``; min size, tiles and the
        plane choice are about the data, so they stay."""
        self._points_spin.value = defaults.points_per_side
        self._iou_spin.value = defaults.pred_iou_thresh
        self._stability_spin.value = defaults.stability_score_thresh

    def set_settings(self, settings: EverythingSettings) -> None:
        """Show ``settings`` in the controls."""
        self.apply_defaults(settings)
        self._min_size_spin.value = settings.min_size
        self._tile_combo.value = settings.tile_size
        self._scope_combo.value = WHOLE_STACK if settings.whole_stack else CURRENT_PLANE
        self._bf16_check.value = settings.decoder_precision == "bf16" and self._bf16_check.enabled

    def settings(self) -> EverythingSettings:
        """The controls' values."""
        return EverythingSettings(
            points_per_side=int(self._points_spin.value),
            pred_iou_thresh=float(self._iou_spin.value),
            stability_score_thresh=float(self._stability_spin.value),
            min_size=int(self._min_size_spin.value),
            tile_size=self._tile_combo.value,
            whole_stack=self._scope_combo.value == WHOLE_STACK,
            decoder_precision="bf16" if self._bf16_check.value else "fp32",
        )

    def set_running(self, running: bool) -> None:
        """Offer Cancel while a run is on, Segment everything otherwise."""
        self._run_button.enabled = not running
        self._cancel_button.enabled = running
