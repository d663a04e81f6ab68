"""The progress bar's windowed rate and ETA (fake clock) and the summary a run prints at its end."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.progress import Progress

from ssrl.runtime.progress import RateEtaColumn, RateMeter, format_duration, summary


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_rate_is_over_the_last_window_and_eta_counts_down_between_updates():
    clock = Clock()
    meter = RateMeter(window=30.0, clock=clock)
    meter.update(0)
    assert meter.rate() is None and meter.eta(1000) is None  # one sample: unknown, not zero
    for t, frames in ((10, 70), (20, 140), (30, 210)):  # 7 frames/s for 30 s
        clock.t = t
        meter.update(frames)
    assert meter.rate() == pytest.approx(7.0)
    for t, frames in ((40, 500), (50, 790), (60, 1080)):  # then 29 frames/s: the window forgets the slow start
        clock.t = t
        meter.update(frames)
    assert meter.rate() == pytest.approx(29.0)
    assert meter.eta(3980) == pytest.approx(100.0)
    clock.t = 70  # no new count for 10 s: the ETA counts down
    meter.update(1080)
    assert meter.eta(3980) == pytest.approx(90.0)


def test_sparse_updates_still_give_a_rate_and_a_reset_count_starts_over():
    clock = Clock()
    meter = RateMeter(window=30.0, clock=clock)
    meter.update(0)
    clock.t = 35.0  # one episode per 35 s: longer than the window
    meter.update(1000)
    assert meter.rate() == pytest.approx(1000 / 35)
    meter.update(10)
    assert meter.rate() is None


def test_bar_column_shows_rate_and_eta_from_the_task_progress():
    clock = Clock()
    column = RateEtaColumn("frames", clock=clock)
    with Progress(column, disable=True, get_time=clock) as progress:
        task = progress.add_task("train", total=1000, completed=0)
        assert str(column.render(progress.tasks[0])) == "     - frames/s  ETA -"
        clock.t = 10.0
        progress.update(task, completed=290)
        assert str(column.render(progress.tasks[0])) == "    29 frames/s  ETA 0:00:24"


def test_summary_gives_final_and_best_eval_wall_time_place_and_next_commands():
    evals = [{"frame": 0.0, "episode_reward": 10.0}, {"frame": 25_000.0, "episode_reward": 293.0},
             {"frame": 30_000.0, "episode_reward": 283.0}]
    run = Path("runs/x/seed0")
    text = summary(run, 30_000, "frames", 972.0, (30_000, 960.0), evals, 13.04,
                   [(f"ssrl eval run_dir={run}", "evaluate")])
    lines = text.splitlines()
    assert lines[0] == f"[bold]done[/] 30,000 frames in 0:16:12 (31 frames/s this session) -> {run}"
    assert lines[1] == "eval return: final 283.0 ± 13.0 at 30,000, best 293.0 at 25,000 (3 evaluations)"
    assert lines[2:] == ["next:", f"  ssrl eval run_dir={run}  # evaluate"]
    assert format_duration(3725) == "1:02:05"
