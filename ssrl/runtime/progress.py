"""The console and the progress bar every command shares."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

console = Console()


def progress_bar(enabled: bool, unit: str = "frames") -> Progress:
    """A bar of ``unit`` done out of the task's total; tasks carry the fields ``rate`` (``unit`` per second)
    and ``status`` (a short note, e.g. the last return or loss)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:>6.0f} " + unit + "/s  {task.fields[status]}"),
                    TimeRemainingColumn(), console=console, disable=not enabled)
