"""The run loop every training run shares: evaluate, train one unit, log, checkpoint, finish."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from ssrl.config import TrainConfig
from ssrl.runtime import meta
from ssrl.runtime.logger import Logger
from ssrl.runtime.progress import console, progress_bar


@dataclass
class Counters:
    step: int = 0
    episode: int = 0
    evals: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0
    elapsed: float = 0.0


class Run:
    """The loop every off-policy run shares: evaluate every ``eval_every`` frames, train one unit (an episode of
    the single env, a chunk of vector steps of batched envs), log its row, checkpoint every ``checkpoint_every``
    frames. Subclasses hold the env, agent and replay and define the unit, evaluation and checkpoint."""

    cfg: TrainConfig
    counters: Counters
    logger: Logger
    run_dir: Path
    replay: Any

    @property
    def frame(self) -> int:
        raise NotImplementedError

    def describe(self) -> str:
        """The run's one-line header."""
        cfg = self.cfg
        return f"[bold]ssrl train[/] {cfg.env} agent={cfg.agent.name} representation={cfg.representation.name}"

    def run_unit(self, progress: Progress, bar: Any) -> dict[str, Any]:
        raise NotImplementedError

    def eval_returns(self) -> list[float]:
        """Returns of this evaluation's deterministic-policy episodes."""
        raise NotImplementedError

    def run_eval(self) -> dict[str, float]:
        """Evaluate, log the eval row and schedule the next evaluation."""
        c = self.counters
        returns = self.eval_returns()
        c.evals += 1
        c.next_eval = self.frame + self.cfg.eval_every
        row = {"frame": self.frame, "step": c.step, "episode": c.episode, "episode_reward": float(np.mean(returns)),
               "episode_reward_std": float(np.std(returns)), "time": c.elapsed}
        self.logger.log("eval", row)
        return row

    def save_checkpoint(self) -> None:
        raise NotImplementedError

    def train(self) -> dict[str, float]:
        """Train until ``cfg.frames`` (the end of the unit that reaches it); return the last eval row."""
        cfg, c = self.cfg, self.counters
        console.print(f"{self.describe()} -> {self.run_dir}\n{self.replay.memory_estimate()}")
        last_eval: dict[str, float] = {}
        start = time.perf_counter() - c.elapsed
        with progress_bar(cfg) as progress:
            bar = progress.add_task("frames", total=cfg.frames, completed=self.frame, fps=0.0, reward="-")
            while self.frame < cfg.frames:
                if self.frame >= c.next_eval:
                    last_eval = self.run_eval()
                    progress.console.print(f"eval  frame {self.frame:>9,}  reward {last_eval['episode_reward']:8.1f}")
                t0, f0 = time.perf_counter(), self.frame
                row = self.run_unit(progress, bar)
                c.elapsed = time.perf_counter() - start
                row |= {"fps": (self.frame - f0) / max(time.perf_counter() - t0, 1e-9), "time": c.elapsed}
                self.logger.log("train", row)
                progress.update(bar, completed=self.frame, fps=row["fps"],
                                reward=f"{row.get('episode_reward', float('nan')):.1f}")
                if self.frame >= c.next_checkpoint or self.frame >= cfg.frames:
                    c.next_checkpoint = self.frame + cfg.checkpoint_every
                    self.save_checkpoint()
        if c.evals == 0 or self.frame >= c.next_eval:
            last_eval = self.run_eval()
            console.print(f"eval  frame {self.frame:>9,}  reward {last_eval['episode_reward']:8.1f}")
            self.save_checkpoint()
        meta.finish(self.run_dir, self.frame, c.elapsed)
        self.logger.close()
        return last_eval
