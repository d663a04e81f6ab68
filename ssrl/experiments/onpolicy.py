"""PPO run loop on batched envs: `ssrl train agent=ppo obs=state env=dmc/cartpole-balance num_envs=64`.

The same command runs thousands of envs on a GPU (`device=cuda num_envs=4096`). Writes what the off-policy
`Trainer` writes, so `ssrl report`, `ssrl eval` and multirun treat PPO runs like the others: `config.yaml`,
`meta.json`, `train.csv` (one row per update: frame, return/length of the episodes finished in the rollout,
env frames/s, losses), `eval.csv` (every `eval_every` frames: mean and std of `eval_episodes` deterministic
episodes, one per env of a separate batched env) and `checkpoint.pt` (every `checkpoint_every` frames and at
the end). Rerunning the same command resumes from the checkpoint: with `backend=cpu` exactly as if never
stopped (weights, optimizers, running statistics, every env's physics state, step counters and RNG, torch's
RNG); with `backend=warp` the envs start fresh episodes. Frames count environment (control) steps: agent
steps x action repeat x envs. On CPU, `threads=0` gives torch one thread: the physics thread pool
(`env_threads`) owns the cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssrl import config as config_lib
from ssrl.agents import make_agent
from ssrl.agents.ppo import ActorCritic
from ssrl.config import TrainConfig
from ssrl.errors import CheckpointError
from ssrl.experiments.loop import Counters, Run
from ssrl.runtime import meta, rundir
from ssrl.runtime.checkpoint import CHECKPOINT, check_config_file, read_checkpoint
from ssrl.runtime.environments import make_batched_env
from ssrl.runtime.environments import make_env as make_single_env
from ssrl.runtime.evaluate import evaluate_batched
from ssrl.runtime.guard import Guard
from ssrl.runtime.logger import start_logging
from ssrl.runtime.progress import console
from ssrl.runtime.seeding import episode_seed, resolve_device, restore_rng, rng_state, start_process


@dataclass
class PPOCounters(Counters):
    """``update`` counts rollout-and-update cycles (frames = update x frames per update)."""

    update: int = 0


class PPORun(Run):
    """One PPO run in `run_dir`: `PPORun(cfg).train()` trains, or resumes if `run_dir` has a checkpoint. A unit
    is one rollout of `agent.num_steps` vector steps and its update."""

    def __init__(self, cfg: TrainConfig, verbose: bool = True) -> None:
        self.cfg, self.verbose = cfg, verbose
        self.run_dir = cfg.resolved_run_dir()
        rundir.check_path(self.run_dir)
        derived = config_lib.derive(cfg)
        self.device = start_process(cfg.seed, derived.threads, cfg.device)
        self.env = make_batched_env(cfg, derived.num_envs, self.device, cfg.seed)
        self.eval_env = make_batched_env(cfg, cfg.eval_episodes, self.device)
        self.agent = make_agent(cfg, self.env.single_observation_space, self.env.single_action_space, self.device,
                                self.env)
        self.frames_per_update = cfg.agent.num_steps * self.env.num_envs * self.env.action_repeat
        self.guard = Guard(cfg.guard, self.device)
        self.counters = PPOCounters()
        self.rows: list[dict[str, Any]] = []  # this session's train rows
        self.obs, _ = self.env.reset(seed=cfg.seed)
        self.claim_run_dir(cfg.restart)
        with self.releasing_on_error():
            stored = read_checkpoint(self.run_dir, cfg)
            check_config_file(self.run_dir, cfg)
            if stored is not None:
                self._restore(stored)
            meta.start(self.run_dir, config_lib.to_dict(cfg), self.frame)
            self.logger = start_logging(cfg, self.run_dir, {"train": self.counters.update,
                                                            "eval": self.counters.evals})
            self.begin(fresh=stored is None)

    @property
    def frame(self) -> int:
        return self.counters.update * self.frames_per_update

    def _restore(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.counters = PPOCounters(**state["counters"])
        if state["env"]:  # cpu backend (a changed backend is refused with the config)
            self.obs = self.env.load_state_dict(state["env"])
        else:  # warp: fresh episodes, seeded by the update they start at
            self.obs, _ = self.env.reset(seed=episode_seed(self.cfg.seed, 2, self.counters.update))
        restore_rng(state["rng"])
        console.print(f"[bold]resumed[/] {self.run_dir} at frame {self.frame:,}")

    def checkpoint_state(self) -> dict[str, Any]:
        return {"config": config_lib.to_dict(self.cfg), "agent": self.agent.state_dict(), "env": self.env.state_dict(),
                "counters": asdict(self.counters), "rng": rng_state()}

    def counter_columns(self) -> dict[str, int]:
        return {"update": self.counters.update}

    def eval_returns(self) -> list[float]:
        act = lambda obs: self.agent.model.act(obs.to(self.agent.device), deterministic=True)
        return evaluate_batched(act, self.eval_env, episode_seed(self.cfg.seed, 1, self.frame))

    def run_unit(self, progress: Any = None, bar: Any = None) -> dict[str, Any]:
        """One rollout and its update; returns the train row."""
        self.obs, episodes = self.agent.collect(self.obs)
        metrics = self.agent.update(self.obs)
        self.guard.metrics(metrics, self.frame)
        self.guard.parameters(self.agent.model, self.frame)  # the next rollout acts with these weights
        self.counters.update += 1
        row: dict[str, Any] = {"frame": self.frame, "update": self.counters.update}
        if episodes:
            row["episode_return"] = sum(r for r, _ in episodes) / len(episodes)
            row["episode_length"] = sum(n for _, n in episodes) / len(episodes)
        return row | metrics

    def status(self, row: dict[str, Any]) -> str:
        return f"return {row.get('episode_return', float('nan')):.1f}"

    def report(self, row: dict[str, Any], progress: Any) -> None:
        self.rows.append(row)
        if self.verbose and "episode_return" in row:
            progress.console.print(f"frame {self.frame:>9,}  return {row['episode_return']:8.1f}  "
                                   f"fps {row['fps']:>7.0f}")

    def finish(self) -> None:
        self.env.close()
        self.eval_env.close()


def train_ppo(cfg: TrainConfig, verbose: bool = True) -> list[dict[str, Any]]:
    """Trains PPO (`agent=ppo`) for `cfg.frames` env frames (resuming from `run_dir`); returns this session's
    train rows."""
    run = PPORun(cfg, verbose)
    run.train()
    return run.rows


def is_ppo_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a PPO run (its `config.yaml` says `agent: {name: ppo}`)."""
    path = Path(run_dir) / "config.yaml"
    return path.exists() and config_lib.load(path).agent.name == "ppo"


class Policy:
    """A trained PPO actor behind the off-policy agents' acting interface (`act`, `train`), for `ssrl eval` in
    the run's single, renderable env (`ssrl.envs.make`): its state observations and [-1, 1] action mapping are
    those of the batched tasks."""

    def __init__(self, model: ActorCritic, device: torch.device) -> None:
        self.model, self.device = model, device

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def act(self, obs: np.ndarray, frame: int, eval_mode: bool) -> np.ndarray:
        obs_tensor = torch.as_tensor(obs, dtype=torch.float32, device=self.device)[None]
        return self.model.act(obs_tensor, deterministic=eval_mode)[0].cpu().numpy()


def load_policy(run_dir: Path, device: str = "auto", render_size: int | None = None) -> tuple[TrainConfig, Policy, Any]:
    """`ssrl eval`'s view of a PPO run (as `train.load_run`): its config, the policy of its latest checkpoint
    and the run's env as a single renderable env."""
    cfg = config_lib.load(Path(run_dir) / "config.yaml")
    state = read_checkpoint(Path(run_dir), cfg)
    if state is None:
        raise FileNotFoundError(f"{Path(run_dir) / CHECKPOINT} not found: the run has not written a checkpoint yet")
    env = make_single_env(cfg, render_size)
    dev = resolve_device(device)
    model = ActorCritic(env.observation_space, env.action_space.shape[0], cfg.agent, cfg.encoder,
                        shared_encoder=cfg.representation.name != "none").to(dev)
    try:
        model.load_state_dict(state["agent"]["model"])
    except RuntimeError as e:  # the weights do not fit the network the config builds
        raise CheckpointError(f"checkpoint of {run_dir} does not match its config.yaml ({e})") from None
    return cfg, Policy(model, dev), env
