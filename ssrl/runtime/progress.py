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

from ssrl.config import TrainConfig

console = Console()


def progress_bar(cfg: TrainConfig) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[fps]:>6.0f} frames/s  reward {task.fields[reward]}"),
                    TimeRemainingColumn(), console=console, disable=not cfg.progress)
