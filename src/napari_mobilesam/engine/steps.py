"""Long tasks as generators of steps: run them to the end, stop them between steps, show progress.

Every long computation of the engine (propagation, precomputing a stack, segment everything,
the automatic mask generator) is written as a generator that yields a progress item after each
step and returns its result. :func:`drive` runs such a generator in the calling thread; a
``cancel`` signal set by another thread (a Cancel button, Ctrl+C) stops it between two steps with
:class:`Cancelled`, and nothing partial is returned. :class:`TerminalProgress` is the terminal
progress bar the scripting functions show with ``progress=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

# A cancel signal: a threading.Event (anything with ``is_set()``), a function returning True to
# stop, or None for "never".
CancelSignal = Any


class Cancelled(RuntimeError):
    """A run was stopped through its ``cancel`` signal; it returned nothing."""


def cancel_requested(cancel: CancelSignal) -> bool:
    """Whether ``cancel`` (an Event, a function, or None) asks to stop now."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if is_set is not None else cancel())


def drive(
    generator: Generator[Any, None, Any],
    on_progress: Callable[[Any], None] | None = None,
    cancel: CancelSignal = None,
    *,
    cancelled: Callable[[], Cancelled] | None = None,
) -> Any:
    """Run a generator to its end in this thread, passing each yielded value to ``on_progress``.

    Arguments:
      generator: the steps; its return value is returned.
      on_progress: called with every yielded item (e.g. a :class:`TerminalProgress`).
      cancel: looked at before every step (see :func:`cancel_requested`): once it asks to stop,
        the generator is closed (its ``finally`` blocks run) and the error is raised, so another
        thread can stop the run between two steps and nothing partial is returned.
      cancelled: makes the error to raise (default: a plain :class:`Cancelled`).
    """
    while True:
        if cancel_requested(cancel):
            generator.close()
            raise (
                cancelled()
                if cancelled
                else Cancelled("The run was cancelled; nothing is returned.")
            )
        try:
            item = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(item)


def map_steps(
    generator: Generator[Any, None, Any], convert: Callable[[Any], Any]
) -> Generator[Any, None, Any]:
    """The steps of ``generator`` with every yielded item passed through ``convert``; returns
    what ``generator`` returns (``result = yield from map_steps(inner, to_outer_progress)``).
    Closing it closes ``generator``."""
    try:
        while True:
            try:
                item = next(generator)
            except StopIteration as stop:
                return stop.value
            yield convert(item)
    finally:
        generator.close()


class TerminalProgress:
    """A tqdm bar on stderr fed with progress items; call :meth:`close` when the run ends.

    Arguments:
      desc: the bar's label, e.g. "embedding planes".
      done_total: item -> (done, total) in ``unit``; or, with ``unit=None``, item -> a fraction
        in [0, 1] (shown as a percentage with elapsed and remaining time, no rate: a rate of
        "per mille per second" means nothing to a reader).
      unit: what is counted, plural ("planes"); the bar shows rates as "2.10 planes/s".
      total: the count shown before the first item arrives (with ``unit``).
    """

    _FRACTION_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"

    def __init__(
        self,
        desc: str,
        done_total: Callable[[Any], Any],
        unit: str | None = None,
        total: int = 0,
    ) -> None:
        from tqdm.auto import tqdm

        self._done_total = done_total
        self._fraction = unit is None
        if self._fraction:
            self._bar = tqdm(total=1000, desc=desc, bar_format=self._FRACTION_FORMAT)
        else:
            self._bar = tqdm(total=total, desc=desc, unit=f" {unit}")
        self._closed = False

    def __call__(self, item: Any) -> None:
        if self._fraction:
            done, total = int(round(1000 * float(self._done_total(item)))), 1000
        else:
            done, total = self._done_total(item)
        self._bar.total = total
        self._bar.n = min(done, total)
        self._bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bar.close()
