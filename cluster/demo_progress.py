"""One ``rich`` progress bar per long stage of ``rayscalp demo``: what the stage does, how far it is, and an ETA.

A stage that reports counts (CNN steps, training updates) gets a bar with an ETA; one that only reports lines
(loading history, evaluation) gets a running timer and its latest line. Display only: never changes what a
stage computes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: The CNN trainer's progress lines start ``step 25/150 (...``: the counts a bar can show.
STEP_LINE = re.compile(r"^\s*step (\d+)/(\d+)\b")
#: Characters of a stage's latest line shown beside its bar (the rest of the line fits 100 columns).
NOTE_CHARS = 40


@dataclass(slots=True)
class StageBar:
    """The handle a stage updates: ``advance_to(done)`` for counts, ``line(text)`` for what it just said."""

    progress: Progress
    task: TaskID

    def advance_to(self, done: float, total: float | None = None) -> None:
        """Set the count done (and the total, once it is known)."""
        self.progress.update(self.task, completed=done, **({"total": total} if total is not None else {}))

    def line(self, text: str) -> None:
        """Show the stage's latest line beside the bar; a ``step k/n`` line also moves the bar."""
        found = STEP_LINE.match(text)
        if found:
            self.advance_to(int(found.group(1)), int(found.group(2)))
        note = " ".join(text.split())
        self.progress.update(self.task, note=note[: NOTE_CHARS - 1] + "…" if len(note) > NOTE_CHARS else note)


@contextlib.contextmanager
def stage_bar(console: Console, what: str, total: float | None = None) -> Iterator[StageBar]:
    """A progress bar for the stage ``what`` while the block runs; it is left on screen, complete, afterwards.

    Parameters
    ----------
    console : rich Console
        The demo's console (lines it prints meanwhile appear above the bar).
    what : str
        What the stage does, e.g. ``"training (Ape-X)"``.
    total : float, optional
        How many counts make the stage (``None``: unknown, a timer instead of an ETA).
    """
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=console) as progress:
        bar = StageBar(progress, progress.add_task(what, total=total, note=""))
        yield bar
        task = progress.tasks[0]
        done = task.total if task.total is not None else max(task.completed, 1)
        progress.update(bar.task, total=done, completed=done)
