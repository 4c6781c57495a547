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

    def add(self, report: TaskReport) -> None:
        self.reports.append(report)

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
        print(
            f"{self.command}: {counts[DONE]} done, {counts[SKIPPED]} skipped (already there), "
            f"{counts[FAILED]} failed",
            file=stream,
        )
        for note in self.notes:
            print(f"  {note}", file=stream)
        for report in self.failed:
            print(f"  failed: {report.name}: {report.reason}", file=stream)


class Progress:
    """A tqdm bar over tasks (on stderr, off when ``quiet``) that feeds a :class:`Summary`."""

    def __init__(self, summary: Summary, total: int, unit: str, quiet: bool = False) -> None:
        from tqdm.auto import tqdm

        self.summary = summary
        self.bar = tqdm(total=total, unit=unit, desc=summary.command, disable=quiet, leave=False)

    def __call__(self, report: TaskReport) -> None:
        self.summary.add(report)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
