"""Tear the dock widget down when it goes: closed, taken out of its dock, or its window closed."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QMainWindow, QWidget


class CloseWatcher(QObject):
    """Calls back when the widget is closed, taken out of its dock, or its main window goes.

    The main window is watched from the moment the widget is found inside one (docking, showing
    or starting a run). Its close is taken as final when the window is about to be deleted
    (napari's main window deletes itself on close), or at once for a close from code
    (``viewer.close()``); a close by the user can still be cancelled in napari's dialog.
    """

    def __init__(self, callback: Callable[[], None], widget: QWidget) -> None:
        super().__init__(widget)
        self._callback = callback
        self._widget = widget
        # A weak reference: the watcher must not keep napari's window (and viewer) alive.
        self._window: weakref.ref[QWidget] | None = None
        widget.installEventFilter(self)

    def watch_window(self) -> None:
        """Also watch the main window the widget is in now (if it is in one)."""
        window = self._widget.window()
        watched = self._window() if self._window is not None else None
        if isinstance(window, QMainWindow) and window is not watched:
            if watched is not None:
                watched.removeEventFilter(self)
            self._window = weakref.ref(window)
            window.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        widget = getattr(self, "_widget", None)
        if widget is None:
            # Qt can still deliver events while Python tears this object down (its attributes
            # are already gone): there is nothing left to watch.
            return False
        kind = event.type()
        if watched is widget:
            if kind == QEvent.Type.Close or (
                kind == QEvent.Type.ParentChange and watched.parent() is None
            ):
                self._callback()
            elif kind in (QEvent.Type.ParentChange, QEvent.Type.Show):
                self.watch_window()
        elif kind == QEvent.Type.DeferredDelete or (
            kind == QEvent.Type.Close and not event.spontaneous()
        ):
            self._callback()
        return False
