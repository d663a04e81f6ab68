"""The one run loop (:class:`Run`): evaluate every ``eval_every``, train one unit, log its row, checkpoint every
``checkpoint_every``, then a final evaluation and checkpoint, the run's ``meta.json`` and a summary line.

Off-policy training on one env (a unit is an episode) or on batched envs (a chunk of vector steps), PPO (a
rollout and its update) and pretraining (``log_every`` gradient steps) are subclasses that supply only their unit
of work, their evaluation (if any), what their checkpoint holds and their header.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from ssrl.errors import DivergenceError
from ssrl.runtime import meta, rundir
from ssrl.runtime.checkpoint import CHECKPOINT, write_checkpoint
from ssrl.runtime.guard import Guard
from ssrl.runtime.logger import Logger
from ssrl.runtime.progress import console, progress_bar, summary


@dataclass
class Counters:
    """The loop's schedule, saved in the run's checkpoint; subclasses add what counts their progress."""

    evals: int = 0
    next_eval: int = 0
    last_eval: int = -1  # frame of the latest evaluation (-1: none yet)
    next_checkpoint: int = 0
    elapsed: float = 0.0


class Run(abc.ABC):
    """A run in ``run_dir`` whose progress is :attr:`frame` (env frames; pretraining: gradient steps) out of
    :attr:`budget`. Subclasses set ``cfg``, ``counters``, ``logger`` and ``run_dir`` and define ``run_unit``,
    ``checkpoint_state`` and, if they evaluate, ``eval_returns``.

    A subclass's constructor checks everything it can (config, device, env, networks) before
    :meth:`claim_run_dir` creates and locks ``run_dir``, builds or restores its state inside
    :meth:`releasing_on_error`, and ends with :meth:`begin`."""

    cfg: Any  # a TrainConfig, or pretraining's config (checkpoint_every, progress and its own budget)
    counters: Counters
    logger: Logger
    run_dir: Path
    namespace = "train"  # the CSV the unit rows go to
    rate_key = "fps"  # the row's throughput column (progress per second)
    unit = "frames"  # what frame and budget count
    evaluates = True  # evaluate every cfg.eval_every frames and at the end
    guard: Guard | None = None  # checks every update's metrics (subclasses that update set it)
    lock: rundir.Lock | None = None
    checkpoint_frame: int | None = None  # the frame of the last checkpoint written or resumed from

    @property
    @abc.abstractmethod
    def frame(self) -> int:
        """Progress so far, in :attr:`unit`."""

    @property
    def budget(self) -> int:
        return self.cfg.frames

    def describe(self) -> str:
        """The run's header line (what runs; the loop adds where)."""
        cfg = self.cfg
        return f"[bold]ssrl train[/] {cfg.env} agent={cfg.agent.name} representation={cfg.representation.name}"

    @abc.abstractmethod
    def run_unit(self, progress: Progress, bar: Any) -> dict[str, Any]:
        """Train one unit; return its row (the loop adds the throughput and the wall time)."""

    def eval_returns(self) -> list[float]:
        """Returns of this evaluation's deterministic-policy episodes (runs that evaluate define it)."""
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Lines printed under the header (e.g. the replay's memory estimate)."""
        return []

    def counter_columns(self) -> dict[str, int]:
        """The counters an eval row records besides the frame."""
        return {}

    @abc.abstractmethod
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything ``checkpoint.pt`` holds to continue exactly."""

    def status(self, row: dict[str, Any]) -> str:
        """The progress bar's note on the last row."""
        return f"reward {row.get('episode_reward', float('nan')):.1f}"

    def report(self, row: dict[str, Any], progress: Progress) -> None:
        """Called after each logged row (e.g. to print it); nothing by default."""
        return None

    def next_commands(self) -> list[tuple[str, str]]:
        """The commands the end-of-run summary suggests, as ``(command, what it does)``."""
        return [(f"ssrl eval run_dir={self.run_dir}", "evaluate the final policy (video=true adds a video)"),
                (f"ssrl report {self.run_dir} --out {self.run_dir / 'report'}", "learning curves and tables")]

    def finish(self) -> None:
        """Called once the budget is reached (e.g. to write an artefact or close envs); nothing by default."""
        return None

    # -------------------------------------------------------------------------------------- run dir
    def claim_run_dir(self, restart: bool, key: str = "run_dir") -> None:
        """Create and lock ``run_dir`` (:func:`ssrl.runtime.rundir.claim`); call it once every check has passed."""
        self.lock = rundir.claim(self.run_dir, restart, key)

    @contextlib.contextmanager
    def releasing_on_error(self) -> Iterator[None]:
        """Release the run dir's lock if building the run fails after :meth:`claim_run_dir`."""
        try:
            yield
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def begin(self, fresh: bool) -> None:
        """A fresh run writes its frame-0 checkpoint, so that a kill at any later point resumes instead of
        leaving data without a checkpoint; a resumed one notes the frame it resumed from."""
        if fresh:
            self.save_checkpoint()
        self.checkpoint_frame = self.frame

    # -------------------------------------------------------------------------------------------- loop
    def run_eval(self) -> dict[str, float]:
        """Evaluate, log the eval row and schedule the next evaluation."""
        c = self.counters
        returns = self.eval_returns()
        c.evals += 1
        c.last_eval, c.next_eval = self.frame, self.frame + self.cfg.eval_every
        row = {"frame": self.frame, **self.counter_columns(), "episode_reward": float(np.mean(returns)),
               "episode_reward_std": float(np.std(returns)), "time": c.elapsed}
        self.logger.log("eval", row)
        return row

    def save_checkpoint(self) -> None:
        """Write the checkpoint, once the guard has seen every update it holds (a diverged state is never saved)."""
        if self.guard is not None:
            self.guard.flush()
        write_checkpoint(self.run_dir, self.checkpoint_state())
        self.checkpoint_frame = self.frame

    def _eval(self, print_line: Callable[[str], None]) -> dict[str, float]:
        row = self.run_eval()
        print_line(f"eval  frame {self.frame:>9,}  reward {row['episode_reward']:8.1f}")
        return row

    def train(self) -> dict[str, float]:
        """Run until :attr:`budget` (the end of the unit that reaches it); return the last eval row. A divergence
        stops the run naming its last good checkpoint; the run dir's lock is released however it ends."""
        try:
            return self._train()
        except DivergenceError as e:
            last = ("none was written" if self.checkpoint_frame is None else
                    f"{self.run_dir / CHECKPOINT} at {self.unit[:-1]} {self.checkpoint_frame:,}")
            raise DivergenceError(f"{e}. Last good checkpoint: {last}. Lower the learning rate, or rerun with "
                                  "another seed (a resume repeats the same updates).") from None
        finally:
            self.release()

    def _train(self) -> dict[str, float]:
        c = self.counters
        console.print("\n".join([f"{self.describe()} -> {self.run_dir}", *self.notes()]))
        last_eval: dict[str, float] = {}
        session_start, session_frame = time.perf_counter(), self.frame
        start = session_start - c.elapsed
        with progress_bar(self.cfg.progress, self.unit) as progress:
            bar = progress.add_task(self.namespace, total=self.budget, completed=self.frame, status="-")
            while self.frame < self.budget:
                if self.evaluates and self.frame >= c.next_eval:
                    last_eval = self._eval(progress.console.print)
                t0, f0 = time.perf_counter(), self.frame
                row = self.run_unit(progress, bar)
                c.elapsed = time.perf_counter() - start
                row |= {self.rate_key: (self.frame - f0) / max(time.perf_counter() - t0, 1e-9), "time": c.elapsed}
                self.logger.log(self.namespace, row)
                self.report(row, progress)
                progress.update(bar, completed=self.frame, status=self.status(row))
                if self.frame >= c.next_checkpoint or self.frame >= self.budget:
                    c.next_checkpoint = self.frame + self.cfg.checkpoint_every
                    self.save_checkpoint()
        if self.guard is not None:
            self.guard.flush()
        if self.evaluates and self.frame > c.last_eval:  # the final policy, also between two eval_every marks
            last_eval = self._eval(console.print)
            self.save_checkpoint()
        session = ((self.frame - session_frame, time.perf_counter() - session_start)
                   if self.frame > session_frame else None)
        meta.finish(self.run_dir, self.frame, c.elapsed)
        self.logger.close()
        self.finish()
        evals = meta.read_eval(self.run_dir) if self.evaluates else []
        console.print(summary(self.run_dir, self.frame, self.unit, c.elapsed, session, evals,
                              last_eval.get("episode_reward_std"), self.next_commands()), soft_wrap=True)
        return last_eval
