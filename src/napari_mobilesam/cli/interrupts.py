"""Ctrl+C during a run: remembered, so an interrupted run always exits 130.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be, and a few
places swallow it (a destructor, a library's callback); a run that lost its interrupt that way
would go on or end with a summary and exit 0 although work was left undone. The handler here
records every Ctrl+C before raising, so the command can tell afterwards.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def remember_interrupts() -> Iterator[threading.Event]:
    """While the block runs, SIGINT sets the yielded event, then raises KeyboardInterrupt as
    usual. Where Ctrl+C is ignored (a background job) or this is not the main thread, nothing
    changes and the event stays clear."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield event
        return

    def handler(signum: int, frame: object) -> None:
        event.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)
