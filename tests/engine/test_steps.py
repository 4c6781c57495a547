"""Running, cancelling and showing progress of step generators (engine/steps.py)."""

from __future__ import annotations

import threading

import pytest

from napari_mobilesam.engine.steps import (
    Cancelled,
    TerminalProgress,
    cancel_requested,
    drive,
    map_steps,
)


def _counter(n: int, closed: list[bool]):
    try:
        yield from range(n)
        return "done"
    finally:
        closed.append(True)


def test_drive_returns_the_value_and_reports_every_step():
    seen: list[int] = []
    closed: list[bool] = []
    assert drive(_counter(3, closed), seen.append) == "done"
    assert seen == [0, 1, 2] and closed == [True]


@pytest.mark.parametrize("kind", ["event", "function"])
def test_cancel_stops_between_steps_and_closes_the_generator(kind):
    event = threading.Event()
    cancel = event if kind == "event" else event.is_set
    closed: list[bool] = []
    seen: list[int] = []

    def report(item: int) -> None:
        seen.append(item)
        if item == 1:
            event.set()  # as another thread would, between two steps

    with pytest.raises(Cancelled, match="cancelled"):
        drive(_counter(10, closed), report, cancel)
    assert seen == [0, 1] and closed == [True]


def test_cancel_raises_the_callers_error():
    class Stopped(Cancelled):
        pass

    with pytest.raises(Stopped, match="my task"):
        drive(_counter(2, []), cancel=lambda: True, cancelled=lambda: Stopped("my task"))


def test_cancel_requested_accepts_events_functions_and_none():
    event = threading.Event()
    assert not cancel_requested(None) and not cancel_requested(event)
    event.set()
    assert cancel_requested(event) and cancel_requested(lambda: True)


def test_map_steps_converts_items_and_keeps_the_result():
    closed: list[bool] = []

    def outer():
        result = yield from map_steps(_counter(3, closed), lambda i: i * 10)
        return result + "!"

    seen: list[int] = []
    assert drive(outer(), seen.append) == "done!"
    assert seen == [0, 10, 20]
    early: list[bool] = []
    gen = map_steps(_counter(5, early), str)
    assert next(gen) == "0"
    gen.close()
    assert early == [True]  # closing the outer generator closes the inner one


def test_terminal_progress_units(capsys):
    bar = TerminalProgress("planes", lambda item: item, "planes", total=4)
    bar((2, 4))
    bar((4, 4))
    fraction = TerminalProgress("everything", lambda item: item)
    fraction(0.5)
    fraction.close()
    fraction.close()  # twice is harmless
    err = capsys.readouterr().err
    assert "planes/s" in err and "4/4" in err
    assert "50%" in err
    assert "‰" not in err and "it/s" not in err
