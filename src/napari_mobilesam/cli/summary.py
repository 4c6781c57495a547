"""Progress bar and the closing summary of a batch run."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from napari_mobilesam.batch.tasks import DONE, FAILED, SKIPPED, TaskReport


@dataclass
class Summary:
    """Counts and failures of one run; :meth:`exit_code` is 0 only if nothing failed."""

    command: str
    reports: list[TaskReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    expected: int = 0  # tasks handed to the scheduler
    received: int = 0  # their reports so far

    def add(self, report: TaskReport) -> None:
        self.reports.append(report)

    @property
    def finished(self) -> bool:
        """Whether every task handed to the scheduler reported back (an interrupted run
        leaves some unreported)."""
        return self.received >= self.expected

    def refuse(self, name: str, reason: str) -> None:
        """An input that never became a task (unreadable header, colliding output name)."""
        self.reports.append(TaskReport(name, FAILED, reason))

    @property
    def failed(self) -> list[TaskReport]:
        return [r for r in self.reports if r.status == FAILED]

    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def print(self, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdout
        # "finish" steps (writing a volume) are not inputs: only their failures are shown.
        counts = Counter(r.status for r in self.reports if r.kind != "finish" or r.status == FAILED)
        say(
            f"{self.command}: {counts[DONE]} done, {counts[SKIPPED]} skipped (already there), "
            f"{counts[FAILED]} failed",
            stream,
        )
        for note in self.notes:
            say(f"  {note}", stream)
        for report in self.failed:
            say(f"  failed: {report.name}: {report.reason}", stream)


def printable(text: str, encoding: str | None) -> str:
    """``text`` as the stream can show it: file names that are not valid in the file system's
    encoding (kept by Python as surrogate escapes) or characters the terminal lacks become
    ``\\x..`` escapes instead of a UnicodeEncodeError."""
    encoding = encoding or "utf-8"
    return text.encode(encoding, errors="backslashreplace").decode(encoding, errors="replace")


def say(text: str, stream: TextIO | None = None) -> None:
    """Print one line, whatever bytes the names in it hold (see :func:`printable`)."""
    stream = stream or sys.stdout
    print(printable(text, getattr(stream, "encoding", None)), file=stream)


class Progress:
    """A tqdm bar over tasks (on stderr, off when ``quiet``) that feeds a :class:`Summary`."""

    def __init__(self, summary: Summary, total: int, unit: str, quiet: bool = False) -> None:
        from tqdm.auto import tqdm

        self.summary = summary
        self.bar = tqdm(total=total, unit=unit, desc=summary.command, disable=quiet, leave=False)

    def __call__(self, report: TaskReport) -> None:
        self.summary.add(report)
        self.summary.received += 1
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
