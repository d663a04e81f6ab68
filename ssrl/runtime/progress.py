"""The console and the progress bar every command shares, its windowed rate and ETA (:class:`RateMeter`), and the
summary a run prints when it ends (:func:`summary`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

console = Console()
RATE_WINDOW = 30.0  # seconds of progress the bar's rate and ETA are computed over


class RateMeter:
    """The current rate of a count (frames, steps) over about the last ``window`` seconds, and the time left to
    a total at that rate. :meth:`update` records ``(time, count)`` when the count changes; the rate spans the
    newest sample and the newest one at least ``window`` old (or the oldest kept), so sparse updates (one per
    episode) still give a rate once two of them exist, and a stall in between (an evaluation) counts."""

    def __init__(self, window: float = RATE_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self._samples: deque[tuple[float, float]] = deque()

    def update(self, count: float, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if self._samples and count == self._samples[-1][1]:
            return
        if self._samples and count < self._samples[-1][1]:  # the count went back: start over
            self._samples.clear()
        self._samples.append((now, count))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Count per second over the window (``None`` before two samples)."""
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None

    def eta(self, total: float, now: float | None = None) -> float | None:
        """Seconds until ``total`` at the current rate, counted down since the last sample (``None``: unknown)."""
        rate = self.rate()
        if not rate or rate <= 0:
            return None
        now = self.clock() if now is None else now
        t1, c1 = self._samples[-1]
        return max((total - c1) / rate - (now - t1), 0.0)


def format_duration(seconds: float) -> str:
    """``3725`` -> ``1:02:05``."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RateEtaColumn(ProgressColumn):
    """``29 frames/s  ETA 0:12:34`` from a :class:`RateMeter` per task, fed with the task's ``completed`` at
    each refresh (whoever updated it)."""

    def __init__(self, unit: str, window: float = RATE_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.unit, self.window, self.clock = unit, window, clock
        self.meters: dict[int, RateMeter] = {}

    def render(self, task: Task) -> Text:
        meter = self.meters.setdefault(task.id, RateMeter(self.window, self.clock))
        now = self.clock()
        meter.update(task.completed, now)
        rate = meter.rate()
        eta = meter.eta(task.total, now) if task.total is not None else None
        shown = "-" if rate is None else f"{rate:,.0f}"
        return Text(f"{shown:>6} {self.unit}/s  ETA {'-' if eta is None else format_duration(eta)}")


def progress_bar(enabled: bool, unit: str = "frames") -> Progress:
    """A bar of ``unit`` done out of the task's total, its current rate and ETA (:class:`RateEtaColumn`); tasks
    carry the field ``status`` (a short note, e.g. the last return or loss)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateEtaColumn(unit),
                    TextColumn("{task.fields[status]}"), console=console, disable=not enabled)


def summary(run_dir: Path, frames: int, unit: str, wall: float, session: tuple[int, float] | None,
            evals: list[dict[str, float]], final_std: float | None, next_commands: list[tuple[str, str]]) -> str:
    """What a run prints at its end: where it is, how long it took, its final and best evaluation and the next
    commands (``(command, what it does)``). ``session``: ``(units, seconds)`` done by this process, if any."""
    lines = [f"[bold]done[/] {frames:,} {unit} in {format_duration(wall)}"
             + (f" ({session[0] / max(session[1], 1e-9):,.0f} {unit}/s this session)" if session else "")
             + f" -> {run_dir}"]
    if evals:
        final, best = evals[-1], max(evals, key=lambda r: r["episode_reward"])
        spread = f" ± {final_std:.1f}" if final_std is not None else ""
        lines.append(f"eval return: final {final['episode_reward']:.1f}{spread} at {final['frame']:,.0f}, best "
                     f"{best['episode_reward']:.1f} at {best['frame']:,.0f} ({len(evals)} evaluations)")
    if next_commands:
        width = max(len(c) for c, _ in next_commands) + 2
        lines.append("next:")
        lines += [f"  {c:<{width}}# {what}" for c, what in next_commands]
    return "\n".join(lines)
