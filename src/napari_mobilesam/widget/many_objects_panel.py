"""Controls of the widget's "Many objects" section: refine from a Labels layer, find seeds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox
from napari.layers import Labels

from napari_mobilesam.engine.seeds import DEFAULT_THRESHOLD
from napari_mobilesam.widget.everything_panel import CURRENT_PLANE, WHOLE_STACK, _side_by_side
from napari_mobilesam.widget.sections import FormSection

KEEP_IDS, NEW_IDS = "keep ids", "new ids"
DEFAULT_DIAMETER = 30


class ManyObjectsPanel(FormSection):
    """Refine-from-labels and seed controls; :class:`ManyObjectsRunner` owns the work.

    Arguments:
      labels_choices: the Labels layers to offer as the refinement's source.
    """

    def __init__(
        self, labels_choices: Callable[[Any], list[tuple[str, Labels]]], expanded: bool = False
    ) -> None:
        super().__init__("Many objects", expanded=expanded)
        self._source_combo = ComboBox(
            choices=labels_choices,
            tooltip="Labels to refine (Cellpose, StarDist, a threshold...): each label becomes "
            "one object prompted by its box and mask. This layer is only read.",
        )
        self._ids_combo = ComboBox(
            choices=[KEEP_IDS, NEW_IDS], value=KEEP_IDS,
            tooltip="keep ids: each object keeps its source id; new ids: ids above the target "
            "layer's largest.",
        )  # fmt: skip
        self._refine_scope = ComboBox(
            choices=[CURRENT_PLANE, WHOLE_STACK], value=CURRENT_PLANE,
            tooltip="The plane on screen, or every plane along the stack axis.",
        )  # fmt: skip
        self._mask_check = CheckBox(
            text="use each label's mask too", value=True,
            tooltip="Prompt with the label's mask (as SAM's mask input) besides its box.",
        )  # fmt: skip
        self._refine_button = PushButton(
            text="Refine from labels",
            tooltip="Write the refined objects into the labels layer (one undo step).",
        )
        self._cancel_button = PushButton(text="Cancel", tooltip="Stop; nothing is written.")
        self._cancel_button.enabled = False
        self._diameter_spin = SpinBox(
            min=2, max=2000, value=DEFAULT_DIAMETER,
            tooltip="The objects' diameter in pixels (the blob detector's scale).",
        )  # fmt: skip
        self._threshold_spin = FloatSpinBox(
            min=0.0, max=10.0, step=0.01, value=DEFAULT_THRESHOLD,
            tooltip="Detector threshold: higher finds fewer, brighter seeds.",
        )  # fmt: skip
        self._dark_check = CheckBox(text="dark objects", value=False)
        self._seeds_button = PushButton(
            text="Find seeds",
            tooltip="Put one point per blob of this plane into a Points layer (edit them, then "
            "segment them as one object per point).",
        )
        self.add_rows(
            [
                ("source", self._source_combo),
                ("ids", self._ids_combo),
                ("planes", self._refine_scope),
                (None, self._mask_check),
                (None, _side_by_side(self._refine_button, self._cancel_button)),
                ("diameter px", self._diameter_spin),
                ("threshold", self._threshold_spin),
                (None, self._dark_check),
                (None, self._seeds_button),
            ]
        )

    @property
    def source(self) -> Labels | None:
        return self._source_combo.value

    @property
    def keep_ids(self) -> bool:
        return self._ids_combo.value == KEEP_IDS

    @property
    def whole_stack(self) -> bool:
        return self._refine_scope.value == WHOLE_STACK

    @property
    def mask_prompt(self) -> bool:
        return bool(self._mask_check.value)

    def seed_settings(self) -> tuple[float, float, bool]:
        """(diameter, threshold, dark)."""
        return (
            float(self._diameter_spin.value),
            float(self._threshold_spin.value),
            bool(self._dark_check.value),
        )

    def reset_choices(self, *_: Any) -> None:
        self._source_combo.reset_choices()

    def set_running(self, running: bool) -> None:
        """Offer Cancel while a run is on."""
        self._refine_button.enabled = not running
        self._seeds_button.enabled = not running
        self._cancel_button.enabled = running
