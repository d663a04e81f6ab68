"""The training loop: env, agent, replay and logger in one ``Trainer``, with checkpoints that resume exactly.

Budgets and intervals count environment frames (``frame = step * action_repeat``). Checkpoints are written
at episode ends and hold everything needed to continue as if never stopped: agent weights and optimizers,
the replay buffer (finished episodes are on disk; the checkpoint records how many belong to it), RNG states
and counters. Rerunning the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from ssrl import config as config_lib
from ssrl.agents import OffPolicyAgent, make_agent
from ssrl.config import TrainConfig
from ssrl.data import ReplayBuffer
from ssrl.envs import default_action_repeat, make
from ssrl.envs.batched import BatchedEnv, make_batched
from ssrl.errors import CheckpointError, ConfigError
from ssrl.experiments import meta
from ssrl.experiments.logger import Logger, start_wandb

CHECKPOINT = "checkpoint.pt"
# Keys a resumed run may change; any other difference from the stored config is an error.
RESUMABLE_KEYS = {"frames", "eval_every", "eval_episodes", "checkpoint_every", "wandb", "wandb_project",
                  "wandb_mode", "progress", "device", "threads", "env_threads", "render_workers", "run_dir", "experiment",
                  "speed.channels_last", "speed.compile", "speed.prefetch"}
console = Console()


def episode_seed(*keys: int) -> int:
    """A reset seed derived from (run seed, stream, episode): independent streams, reproducible per episode."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def start_process(seed: int, threads: int, device: str) -> torch.device:
    """Seed Python, numpy and torch, set torch's CPU threads (0 keeps its default) and resolve ``device``."""
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return resolve_device(device)


def make_env(cfg: TrainConfig, render_size: int | None = None) -> gym.Env:
    """The run's environment; ``render_size`` sets the side of ``env.render()`` video frames (default: ``size``)."""
    return make(cfg.env, obs=cfg.obs, size=cfg.size, frame_stack=cfg.frame_stack,
                action_repeat=cfg.action_repeat or None, render=cfg.render, render_size=render_size)


def make_batched_env(cfg: TrainConfig, num_envs: int, device: torch.device, seed: int | None = None) -> BatchedEnv:
    """``num_envs`` batched envs of the run's task; a task without a batched version is a ConfigError naming
    those that have one."""
    try:
        return make_batched(cfg.env, num_envs, device=device, backend=cfg.backend, seed=seed,
                            action_repeat=cfg.action_repeat or None, num_threads=cfg.env_threads, obs=cfg.obs,
                            size=cfg.size, frame_stack=cfg.frame_stack, render=cfg.render,
                            render_workers=cfg.render_workers)
    except ValueError as e:
        raise ConfigError(f"env={cfg.env}: {e}") from None


@torch.no_grad()
def evaluate_batched(act: Callable[[torch.Tensor], torch.Tensor], env: BatchedEnv, seed: int) -> list[float]:
    """Return of the first episode of each of ``env``'s envs under the (deterministic) policy ``act``, from a
    reset with ``seed``."""
    obs, _ = env.reset(seed=seed)
    returns = torch.full((env.num_envs,), float("nan"), device=env.device)
    while bool(returns.isnan().any()):
        obs, _, _, _, info = env.step(act(obs))
        if "episode" in info:
            first = info["_episode"] & returns.isnan()
            returns = torch.where(first, info["episode"]["r"], returns)
    return returns.tolist()


def read_checkpoint(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint in ``run_dir`` (None if there is none), checked against ``cfg``: a config that differs
    in keys outside ``RESUMABLE_KEYS`` is a :class:`ConfigError` (call it before any work starts)."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which and what to do
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}). Move it away to start "
                              f"this run over, or use another run_dir; nothing was changed.") from None
    try:
        stored_cfg = config_lib.from_dict(state["config"])
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"checkpoint {path} holds no valid config ({e}); nothing was changed.") from None
    changed = {k: v for k, v in config_lib.diff(stored_cfg, cfg).items() if k not in RESUMABLE_KEYS}
    if changed:
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(f"{run_dir} holds a run with a different config ({lines}). Use the same "
                          f"settings to resume, or a new run_dir.")
    return state


def write_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous checkpoint intact."""
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state(rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Python's, ``rng``'s (if given), torch's and CUDA's random states."""
    return {"python": random.getstate(), "numpy": None if rng is None else rng.bit_generator.state,
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict[str, Any], rng: np.random.Generator | None = None) -> None:
    random.setstate(state["python"])
    if rng is not None:
        rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


def start_logging(cfg: TrainConfig, run_dir: Path, rows: dict[str, int]) -> Logger:
    """The run's Logger (wandb if asked), keeping the first ``rows[namespace]`` CSV rows (those before the
    checkpoint), after recording the config and the session in ``run_dir``."""
    config_lib.save(cfg, run_dir / "config.yaml")
    wandb_run = None
    if cfg.wandb and cfg.wandb_mode != "disabled":
        name = f"{cfg.env}/{cfg.agent.name}-{cfg.representation.name}/seed{cfg.seed}"
        tags = [cfg.env, cfg.agent.name, cfg.representation.name, f"seed{cfg.seed}"]
        wandb_run = start_wandb(run_dir, config_lib.to_dict(cfg), cfg.wandb_project, cfg.wandb_mode, name,
                                tags, group=cfg.experiment or cfg.env)
    logger = Logger(run_dir, wandb_run)
    logger.keep_first(rows)
    return logger


def progress_bar(cfg: TrainConfig) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[fps]:>6.0f} frames/s  reward {task.fields[reward]}"),
                    TimeRemainingColumn(), console=console, disable=not cfg.progress)


@dataclass
class Counters:
    step: int = 0
    episode: int = 0
    evals: int = 0
    next_eval: int = 0
    next_checkpoint: int = 0
    elapsed: float = 0.0


def evaluate(agent: OffPolicyAgent, env: gym.Env, episodes: int, seed: int, frame: int,
             video: list[np.ndarray] | None = None) -> list[float]:
    """Returns of ``episodes`` deterministic-policy episodes; appends ``env.render()`` frames to ``video``."""
    agent.train(False)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=episode_seed(seed, 1, frame, i))
        total, done = 0.0, False
        while not done:
            if video is not None:
                video.append(env.render())
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, frame, eval_mode=True))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    agent.train(True)
    return returns


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


class Trainer(Run):
    """Holds one run. ``Trainer(cfg).train()`` trains, or resumes if ``run_dir`` has a checkpoint."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        try:
            default_action_repeat(cfg.env)  # an unknown task fails here, before anything is written
        except ValueError as e:
            raise ConfigError(f"env: {e}") from None
        self.run_dir = cfg.resolved_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stored = read_checkpoint(self.run_dir, cfg)
        self.device = start_process(cfg.seed, cfg.threads, cfg.device)
        self.rng = np.random.default_rng(cfg.seed)

        self.env, self.eval_env = make_env(cfg), make_env(cfg)
        self.action_repeat = int(self.env.get_wrapper_attr("action_repeat"))
        space = self.env.observation_space
        self.replay = ReplayBuffer(space, self.env.action_space, cfg.replay_capacity, frame_stack=cfg.frame_stack,
                                   n_step=cfg.agent.n_step, gamma=cfg.agent.discount,
                                   directory=self.run_dir / "replay", seed=cfg.seed)
        self.agent = make_agent(cfg, space, self.env.action_space, self.device)
        self.counters = Counters()
        self._restore(stored)
        meta.start(self.run_dir, config_lib.to_dict(cfg), self.frame)
        self.logger = start_logging(cfg, self.run_dir, {"train": self.counters.episode, "eval": self.counters.evals})

    # ----------------------------------------------------------------------------------------- state
    @property
    def frame(self) -> int:
        return self.counters.step * self.action_repeat

    def _restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self.replay.restore(0)  # a run killed before its first checkpoint starts over
            return
        self.agent.restore(state["agent"])
        self.replay.load_state_dict(state["replay"])
        self.counters = Counters(**state["counters"])
        restore_rng(state["rng"], self.rng)
        console.print(f"[bold]resumed[/] {self.run_dir} at frame {self.frame:,} ({len(self.replay):,} transitions)")

    def save_checkpoint(self) -> None:
        write_checkpoint(self.run_dir, {"config": config_lib.to_dict(self.cfg), "agent": self.agent.checkpoint(),
                                        "replay": self.replay.state_dict(), "counters": asdict(self.counters),
                                        "rng": rng_state(self.rng)})

    # -------------------------------------------------------------------------------------- training

    def run_unit(self, progress: Progress, bar: Any) -> dict[str, Any]:
        """Act, store and update for one episode; return its train row."""
        cfg, c = self.cfg, self.counters
        obs, _ = self.env.reset(seed=episode_seed(cfg.seed, 0, c.episode))
        self.replay.add_first(obs)
        seed_steps = cfg.seed_frames // self.action_repeat
        sums: dict[str, torch.Tensor] = {}
        updates, total, length, done = 0, 0.0, 0, False
        while not done:
            if c.step < seed_steps:
                action = self.rng.uniform(self.env.action_space.low, self.env.action_space.high).astype(np.float32)
            else:
                action = self.agent.act(obs, self.frame, eval_mode=False)
            if c.step >= seed_steps and c.step % cfg.agent.update_every == 0 and len(self.replay) > 0:
                for key, value in self.agent.update(self.replay, self.frame).items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += 1
            obs, reward, terminated, truncated, _ = self.env.step(action)
            done = terminated or truncated
            self.replay.add(action, float(reward), obs, terminated, truncated)
            total += float(reward)
            length += 1
            c.step += 1
            if length % 50 == 0:
                progress.update(bar, completed=self.frame)
        c.episode += 1
        row: dict[str, Any] = {"frame": self.frame, "step": c.step, "episode": c.episode,
                               "episode_reward": total, "episode_length": length}
        return row | {k: float(v) / updates for k, v in sums.items()}

    def eval_returns(self) -> list[float]:
        return evaluate(self.agent, self.eval_env, self.cfg.eval_episodes, self.cfg.seed, self.frame)


def load_run(run_dir: Path, device: str = "auto", render_size: int | None = None
             ) -> tuple[TrainConfig, OffPolicyAgent, gym.Env]:
    """The config, agent (from the latest checkpoint) and an env of a finished or running run."""
    cfg_path, ckpt_path = run_dir / "config.yaml", run_dir / CHECKPOINT
    for path in (cfg_path, ckpt_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: is {run_dir} an ssrl run directory?")
    cfg = config_lib.load(cfg_path)
    env = make_env(cfg, render_size)
    agent = make_agent(cfg, env.observation_space, env.action_space, resolve_device(device))
    try:
        state = torch.load(ckpt_path, map_location=agent.device, weights_only=True)
        agent.restore(state["agent"])
    except Exception as e:
        raise CheckpointError(f"checkpoint {ckpt_path} is unreadable or does not match {cfg_path} ({e})") from None
    return cfg, agent, env
