"""The dock widget's frame: titled form sections (collapsible) in one scrolling column.

A :class:`FormSection` holds rows of (label, control) in a ``QFormLayout``; the dock widget stacks
its sections in a :class:`ScrollColumn` and gives every section's label column one width, so the
whole widget reads as one form. Panels that own controls (the 3D section, for example) subclass
:class:`FormSection`; adding one to the widget is one ``add_section`` call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from magicgui.widgets import FileEdit, Label, Widget
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible, QElidingLabel

# Characters after which a long word (a file path) may wrap: a zero-width space is inserted.
_BREAK_AFTER = ("/", "\\")
_ZERO_WIDTH_SPACE = "\u200b"
# Layer names can be long; combo boxes show at least this many characters and elide the rest,
# so a long name never widens the dock. The widest row sets the dock's minimum width, and
# napari's first start sizes its window to the docks' widths plus the canvas: on a 1366 px
# screen the dock has about 285 px (tests/widget/test_widget_frame.py checks it).
COMBO_CHARACTERS = 6
# Pixels an elided read-out keeps free at its right (see ElidedLabel).
ELIDE_MARGIN = 10
# Spin boxes hold short numbers: this minimum (before padding and buttons) is enough.
SPIN_MIN_WIDTH = 40
# QCollapsible indents its content by this much (superqt's default).
_CONTENT_LEFT_MARGIN = 5
# The column's minimum height (pixels); below its content's height it scrolls.
MIN_HEIGHT = 160


def breakable(text: str) -> str:
    """``text`` with break opportunities after path separators, so paths wrap in a label."""
    for separator in _BREAK_AFTER:
        text = text.replace(separator, separator + _ZERO_WIDTH_SPACE)
    return text


def wrapping_label(value: str = "", **kwargs: Any) -> Label:
    """A read-out that wraps long text onto more lines instead of widening the dock."""
    label = Label(value=value, **kwargs)
    _wrap(label.native)
    return label


def _wrap(native: QLabel) -> None:
    native.setWordWrap(True)
    # Not selectable: a copy would carry the zero-width spaces of breakable() along.
    # An ignored width hint: the form gives the label its column's width and the label wraps to
    # it; an unbreakable word is cut rather than pushing the canvas aside.
    policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    policy.setHeightForWidth(True)
    native.setSizePolicy(policy)


class ElidedLabel(QElidingLabel):
    """A one-line read-out for a path or file name: too long a text is elided in the middle,
    so both of its ends stay readable, and the whole text is in the tooltip. It never widens
    the dock. ``value`` reads and sets the text, as on a magicgui ``Label``."""

    def __init__(self, value: str = "") -> None:
        super().__init__()
        self.setElideMode(Qt.TextElideMode.ElideMiddle)
        # Elide to a little less than the label's width: napari's style pads labels, and the
        # eliding counts the whole width.
        self.setEllipsesWidth(ELIDE_MARGIN)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.value = value

    @property
    def value(self) -> str:
        return self.text()

    @value.setter
    def value(self, text: str) -> None:
        self.setText(text)
        self.setToolTip(text)


def _like_collapsible_content(body: QWidget) -> QWidget:
    """``body`` framed with the margins a QCollapsible gives its content, so that a section
    that cannot fold lines up with those that can."""
    frame = QFrame()  # QCollapsible is a QFrame: the same style rules apply to both
    content = QWidget()
    QVBoxLayout(frame).addWidget(content)  # the collapsible's own layout, default margins
    inner = QVBoxLayout(content)
    inner.setContentsMargins(_CONTENT_LEFT_MARGIN, 0, 0, 0)  # as QCollapsible's content
    inner.addWidget(body)
    return frame


def _native(control: Widget | QWidget) -> QWidget:
    return control.native if isinstance(control, Widget) else control


class FormSection:
    """A titled group of controls in one ``QFormLayout``, collapsible or always shown.

    Attributes:
        title: the section's heading (the collapsible's button text).
        native: the Qt widget to place in the column (the collapsible, or the bare form).
    """

    def __init__(self, title: str, *, collapsible: bool = True, expanded: bool = True) -> None:
        self.title = title
        self._controls: list[Widget] = []
        self._labels: list[QLabel] = []
        self.body = QWidget()
        self.form = QFormLayout(self.body)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.collapsible: QCollapsible | None = None
        if collapsible:
            self.collapsible = QCollapsible(title)
            self.collapsible.addWidget(self.body)
            if expanded:
                self.collapsible.expand(animate=False)
            self.native: QWidget = self.collapsible
        else:
            self.native = _like_collapsible_content(self.body)

    def add_row(self, label: str | None, control: Widget | QWidget) -> None:
        """Add ``control`` with ``label`` in the label column (``None``: across both columns)."""
        if isinstance(control, Widget):
            self._controls.append(control)
        if isinstance(control, FileEdit):
            # "Choose directory" alone is wider than a combo box; the dialog's title says it.
            control.choose_btn.text = "Choose..."
            control.choose_btn.tooltip = control._btn_text
        widget = _native(control)
        if isinstance(widget, QComboBox):
            policy = QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            widget.setSizeAdjustPolicy(policy)
            widget.setMinimumContentsLength(COMBO_CHARACTERS)
        elif isinstance(widget, QLabel) and not isinstance(widget, QElidingLabel):
            _wrap(widget)  # a read-out never widens the dock, whichever section adds it
        elif isinstance(widget, QAbstractSpinBox):
            # napari's style gives every spin box a 70 px minimum (132 px with padding and
            # buttons), which alone set the dock's width; the numbers here are short.
            widget.setStyleSheet(f"QAbstractSpinBox {{ min-width: {SPIN_MIN_WIDTH}px; }}")
        if label is None:
            self.form.addRow(widget)
            return
        text = QLabel(label)
        text.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self._labels.append(text)
        self.form.addRow(text, widget)

    def add_rows(self, rows: Iterable[tuple[str | None, Widget | QWidget]]) -> None:
        for label, control in rows:
            self.add_row(label, control)

    @property
    def labels(self) -> list[QLabel]:
        """The label column's labels."""
        return list(self._labels)

    @property
    def expanded(self) -> bool:
        """Whether the section's controls are shown (always, for a section that cannot fold)."""
        return self.collapsible is None or self.collapsible.isExpanded()

    @expanded.setter
    def expanded(self, value: bool) -> None:
        if self.collapsible is None:
            return
        if value:
            self.collapsible.expand(animate=False)
        else:
            self.collapsible.collapse(animate=False)

    def reset_choices(self, *_: Any) -> None:
        """Refresh the choices of the section's combo boxes (the viewer's layers changed)."""
        for control in self._controls:
            reset = getattr(control, "reset_choices", None)
            if reset is not None:
                reset()


def align_labels(sections: Sequence[FormSection]) -> int:
    """Give every section's label column the width of the widest label; returns that width."""
    labels = [label for section in sections for label in section.labels]
    for label in labels:
        label.setMinimumWidth(0)
    width = max((label.sizeHint().width() for label in labels), default=0)
    for label in labels:
        label.setMinimumWidth(width)
    return width


class ScrollColumn(QScrollArea):
    """A vertical column of sections that scrolls when the dock is shorter than its content.

    Its preferred width is the narrowest its content allows, so that docking it leaves the rest
    of the window to the canvas.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[FormSection] = []
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.inner = QWidget()
        self.column = QVBoxLayout(self.inner)
        self.column.setContentsMargins(2, 2, 2, 2)
        self.column.addStretch(1)
        self.setWidget(self.inner)
        # A scroll area does not pass its content's size changes on: do it, so that the dock
        # widens when the content needs it (instead of cutting it off on the right).
        self.inner.installEventFilter(self)

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 (Qt's name)
        if watched is self.inner and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def add(self, item: FormSection | QWidget) -> None:
        """Append a section (or a plain widget) below the earlier ones."""
        if isinstance(item, FormSection):
            self.sections.append(item)
            item = item.native
        self.column.insertWidget(self.column.count() - 1, item)
        align_labels(self.sections)

    # The labels' widths depend on the style napari applies when the widget is docked.
    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        align_labels(self.sections)
        super().showEvent(event)

    def changeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        if event.type() in (QEvent.Type.StyleChange, QEvent.Type.FontChange):
            align_labels(self.sections)
        super().changeEvent(event)

    def _width(self) -> int:
        bar = max(
            self.verticalScrollBar().sizeHint().width(),
            self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent),
        )
        return self.inner.minimumSizeHint().width() + bar + 2 * self.frameWidth() + 2

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        # Short enough for any screen: the rest scrolls.
        return QSize(self._width(), min(MIN_HEIGHT, self.inner.sizeHint().height()))

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(self._width(), self.inner.sizeHint().height())
