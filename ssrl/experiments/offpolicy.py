"""Off-policy training (SAC, DrQ-v2, any representation): one env (``Trainer``) or batched envs with a
device-resident replay (``BatchedTrainer``, ``num_envs > 1``). Both run :class:`~ssrl.experiments.loop.Run`.

The single env: budgets and intervals count environment frames (``frame = step * action_repeat``). Checkpoints
are written at episode ends and hold everything needed to continue as if never stopped: agent weights and
optimizers, the replay buffer (finished episodes are on disk; the checkpoint records how many belong to it),
RNG states and counters. Rerunning the same command resumes from the last checkpoint.

Batched envs: ``ssrl train env=dmc/cheetah-run agent=sac obs=state num_envs=32 device=cpu``
(``device=cuda num_envs=1024`` on a GPU). ``num_envs`` envs step together (``ssrl.envs.make_batched``); every
vector step stores one transition per env in a :class:`~ssrl.data.DeviceReplay` on the training device, and the
agent acts on the whole batch.

- On CPU, ``threads=0`` gives torch one thread (as for PPO): the physics pool (``env_threads``) owns the cores;
  two torch threads made a state SAC update 30x slower on a busy 2-core machine.
- Frames count env control steps over all envs: ``vector steps x action_repeat x num_envs``. The first
  ``seed_frames`` take uniform random actions.
- Updates per vector step: ``updates_per_step``, by default ``num_envs / agent.update_every`` (the single-env
  update-to-data ratio); a fraction accumulates across steps. Each update is the agent's unchanged
  ``update(replay, frame)``.
- One train row per *chunk* of ``ceil(1000 / action_repeat)`` vector steps (one dm_control episode length):
  the mean return and length of the episodes finished in it, env frames/s and mean update metrics. Eval
  (deterministic policy, one episode in each of ``eval_episodes`` batched envs) and checkpoints happen between
  chunks at ``eval_every``/``checkpoint_every`` frames, as the single-env Trainer does between episodes.
- Checkpoints hold weights, optimizers, counters, RNG states, the replay and (cpu backend) every env's state
  (``BatchedEnv.state_dict``), so rerunning the command resumes exactly. On the warp backend the open episodes
  are cut (truncated) in the replay and the envs start new episodes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.progress import Progress

from ssrl import config as config_lib
from ssrl.agents import OffPolicyAgent, make_agent
from ssrl.config import TrainConfig
from ssrl.data import DeviceReplay, ReplayBuffer
from ssrl.envs import default_action_repeat
from ssrl.envs.batched import list_batched_tasks
from ssrl.envs.batched.tasks import EPISODE_CONTROL_STEPS
from ssrl.errors import CheckpointError, ConfigError, DatasetError
from ssrl.experiments.loop import Counters, Run
from ssrl.runtime import meta, rundir
from ssrl.runtime.checkpoint import CHECKPOINT, check_config_file, read_checkpoint
from ssrl.runtime.environments import make_batched_env, make_env
from ssrl.runtime.evaluate import evaluate, evaluate_batched
from ssrl.runtime.guard import Guard
from ssrl.runtime.logger import start_logging
from ssrl.runtime.progress import console
from ssrl.runtime.seeding import episode_seed, resolve_device, restore_rng, rng_state, start_process


@dataclass
class OffPolicyCounters(Counters):
    """``step`` counts agent steps (vector steps on batched envs), ``episode`` finished episodes."""

    step: int = 0
    episode: int = 0


class OffPolicyRun(Run):
    """What the single-env and the batched off-policy runs share."""

    counters: OffPolicyCounters
    replay: ReplayBuffer | DeviceReplay

    def notes(self) -> list[str]:
        return [self.replay.memory_estimate()]

    def counter_columns(self) -> dict[str, int]:
        return {"step": self.counters.step, "episode": self.counters.episode}


class Trainer(OffPolicyRun):
    """Holds one run. ``Trainer(cfg).train()`` trains, or resumes if ``run_dir`` has a checkpoint."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        try:
            default_action_repeat(cfg.env)  # an unknown task fails here, before anything is written
        except ValueError as e:
            raise ConfigError(f"env: {e}") from None
        self.run_dir = cfg.resolved_run_dir()
        rundir.check_path(self.run_dir)
        self.device = start_process(cfg.seed, cfg.threads, cfg.device)
        self.rng = np.random.default_rng(cfg.seed)

        self.env, self.eval_env = make_env(cfg), make_env(cfg)
        self.action_repeat = int(self.env.get_wrapper_attr("action_repeat"))
        episode = math.ceil(self.env.get_wrapper_attr("max_episode_steps") / self.action_repeat)
        if cfg.replay_capacity <= episode:  # an episode must fit to be saved
            raise ConfigError(f"replay_capacity={cfg.replay_capacity} holds less than one episode of {cfg.env} "
                              f"({episode} steps at action repeat {self.action_repeat}); set replay_capacity "
                              f">= {episode + 1}")
        space = self.env.observation_space
        self.replay = ReplayBuffer(space, self.env.action_space, cfg.replay_capacity, frame_stack=cfg.frame_stack,
                                   n_step=cfg.agent.n_step, gamma=cfg.agent.discount,
                                   directory=self.run_dir / "replay", seed=cfg.seed)
        self.agent = make_agent(cfg, space, self.env.action_space, self.device)
        self.guard = Guard(cfg.guard, self.device)
        self.counters = OffPolicyCounters()
        self.claim_run_dir(cfg.restart)
        with self.releasing_on_error():
            stored = read_checkpoint(self.run_dir, cfg)
            check_config_file(self.run_dir, cfg)
            self._restore(stored)
            meta.start(self.run_dir, config_lib.to_dict(cfg), self.frame)
            self.logger = start_logging(cfg, self.run_dir, {"train": self.counters.episode,
                                                            "eval": self.counters.evals})
            self.begin(fresh=stored is None)

    # ----------------------------------------------------------------------------------------- state
    @property
    def frame(self) -> int:
        return self.counters.step * self.action_repeat

    def _restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        self.agent.restore(state["agent"])
        load_replay(self.replay, state["replay"], self.run_dir)
        self.counters = OffPolicyCounters(**state["counters"])
        restore_rng(state["rng"], self.rng)
        console.print(f"[bold]resumed[/] {self.run_dir} at frame {self.frame:,} ({len(self.replay):,} transitions)")

    def checkpoint_state(self) -> dict[str, Any]:
        self.agent.drop_prefetch()
        return {"config": config_lib.to_dict(self.cfg), "agent": self.agent.checkpoint(),
                "replay": self.replay.state_dict(), "counters": asdict(self.counters), "rng": rng_state(self.rng)}

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
                self.guard.action(action, self.frame)
            if c.step >= seed_steps and c.step % cfg.agent.update_every == 0 and len(self.replay) > 0:
                metrics = self.agent.update(self.replay, self.frame)
                self.guard.metrics(metrics, self.frame)
                for key, value in metrics.items():
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


@dataclass
class BatchedCounters(OffPolicyCounters):
    """``step`` counts vector steps, ``episode`` finished episodes over all envs; ``rows`` train rows logged,
    ``credit`` the fractional update carried to the next vector step."""

    rows: int = 0
    credit: float = 0.0


def check_batched(cfg: TrainConfig) -> None:
    """Refuse what batched off-policy training cannot run, naming the fix."""
    if cfg.env not in list_batched_tasks():
        raise ConfigError(f"env={cfg.env}: num_envs={cfg.num_envs} runs batched envs, which exist for "
                          f"{', '.join(list_batched_tasks())}; num_envs=1 runs {cfg.env} as one env")
    if cfg.obs == "pixels+state":
        raise ConfigError("obs=pixels+state: batched envs give obs=state or obs=pixels "
                          "(num_envs=1 runs pixels+state as one env)")


class BatchedTrainer(OffPolicyRun):
    """Holds one run on batched envs. ``BatchedTrainer(cfg).train()`` trains, or resumes from ``run_dir``."""

    def __init__(self, cfg: TrainConfig) -> None:
        check_batched(cfg)
        self.cfg = cfg
        self.run_dir = cfg.resolved_run_dir()
        rundir.check_path(self.run_dir)
        derived = config_lib.derive(cfg)
        self.device = start_process(cfg.seed, derived.threads, cfg.device)
        self.num_envs = derived.num_envs
        self.env = make_batched_env(cfg, self.num_envs, self.device, cfg.seed)
        self.eval_env = make_batched_env(cfg, cfg.eval_episodes, self.device, cfg.seed + 1)
        self.action_repeat = self.env.action_repeat
        self.chunk_steps = math.ceil(EPISODE_CONTROL_STEPS / self.action_repeat)
        self.updates_per_step = derived.updates_per_step
        obs_space, action_space = self.env.single_observation_space, self.env.single_action_space
        self.replay = DeviceReplay(obs_space, action_space, self.num_envs, cfg.replay_capacity, device=self.device,
                                   frame_stack=cfg.frame_stack, n_step=cfg.agent.n_step, gamma=cfg.agent.discount,
                                   seed=cfg.seed)
        self.agent = make_agent(cfg, obs_space, action_space, self.device)
        self.action_low = torch.as_tensor(action_space.low, device=self.device)
        self.action_high = torch.as_tensor(action_space.high, device=self.device)
        self.guard = Guard(cfg.guard, self.device)
        self.counters = BatchedCounters()
        self.claim_run_dir(cfg.restart)
        with self.releasing_on_error():
            stored = read_checkpoint(self.run_dir, cfg)
            check_config_file(self.run_dir, cfg)
            self.obs = self._restore(stored)
            meta.start(self.run_dir, config_lib.to_dict(cfg), self.frame)
            self.logger = start_logging(cfg, self.run_dir, {"train": self.counters.rows,
                                                            "eval": self.counters.evals})
            self.begin(fresh=stored is None)

    @property
    def frame(self) -> int:
        return self.counters.step * self.action_repeat * self.num_envs

    def _restore(self, state: dict[str, Any] | None) -> torch.Tensor:
        """Load ``state`` (if any) and return the observation to act on next."""
        if state is None:
            return self.env.reset(seed=episode_seed(self.cfg.seed, 0, 0))[0]
        self.agent.restore(state["agent"])
        load_replay(self.replay, state["replay"], self.run_dir)
        self.counters = BatchedCounters(**state["counters"])
        restore_rng(state["rng"])
        console.print(f"[bold]resumed[/] {self.run_dir} at frame {self.frame:,} ({len(self.replay):,} transitions)")
        if state["env"]:  # cpu backend: every env continues exactly where it was
            return self.env.load_state_dict(state["env"])
        self.replay.end_episodes(state["obs"].to(self.device))  # warp: cut the open episodes, start new ones
        return self.env.reset(seed=episode_seed(self.cfg.seed, 0, self.counters.step))[0]

    def checkpoint_state(self) -> dict[str, Any]:
        self.agent.drop_prefetch()
        return {"config": config_lib.to_dict(self.cfg), "agent": self.agent.checkpoint(),
                "replay": self.replay.state_dict(), "env": self.env.state_dict(), "obs": self.obs.cpu(),
                "counters": asdict(self.counters), "rng": rng_state()}

    def describe(self) -> str:
        return f"{super().describe()} num_envs={self.num_envs} updates/step={self.updates_per_step:g}"

    def run_unit(self, progress: Any = None, bar: Any = None) -> dict[str, Any]:
        """Act, store and update for ``chunk_steps`` vector steps (one episode length); return the train row."""
        cfg, c = self.cfg, self.counters
        seed_steps = math.ceil(cfg.seed_frames / (self.action_repeat * self.num_envs))
        sums: dict[str, torch.Tensor] = {}
        ep_return = torch.zeros((), device=self.device)
        ep_length = torch.zeros((), device=self.device)
        ep_count = torch.zeros((), device=self.device)
        updates = 0
        for _ in range(self.chunk_steps):
            if c.step < seed_steps:
                u = torch.rand((self.num_envs, *self.action_low.shape), device=self.device)
                action = self.action_low + u * (self.action_high - self.action_low)
            else:
                action = self.agent.act_batch(self.obs, self.frame, eval_mode=False)
                self.guard.action(action, self.frame)
                c.credit += self.updates_per_step if len(self.replay) > 0 else 0.0
                while c.credit >= 1:
                    metrics = self.agent.update(self.replay, self.frame)
                    self.guard.metrics(metrics, self.frame)
                    for key, value in metrics.items():
                        sums[key] = sums.get(key, 0.0) + value
                    updates += 1
                    c.credit -= 1
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            self.replay.add(self.obs, action, reward, terminated, truncated, info.get("final_obs"))
            if "episode" in info:
                mask = info["_episode"]
                ep_return += torch.where(mask, info["episode"]["r"], 0.0).sum()
                ep_length += torch.where(mask, info["episode"]["l"], 0).sum()
                ep_count += mask.sum()
            self.obs = next_obs
            c.step += 1
        episodes = int(ep_count)
        c.episode += episodes
        c.rows += 1
        row: dict[str, Any] = {"frame": self.frame, "step": c.step, "episode": c.episode, "updates": updates}
        if episodes:
            row |= {"episode_reward": float(ep_return) / episodes, "episode_length": float(ep_length) / episodes}
        return row | {k: float(v) / updates for k, v in sums.items()}

    def eval_returns(self) -> list[float]:
        """One deterministic-policy episode in each of the ``eval_episodes`` envs of the eval env."""
        self.agent.train(False)
        returns = evaluate_batched(lambda obs: self.agent.act_batch(obs, self.frame, eval_mode=True), self.eval_env,
                                   episode_seed(self.cfg.seed, 1, self.frame))
        self.agent.train(True)
        return returns


def load_replay(replay: ReplayBuffer | DeviceReplay, state: dict[str, Any], run_dir: Path) -> None:
    """Restore a resumed run's replay; a missing or damaged episode file names the way out."""
    try:
        replay.load_state_dict(state)
    except DatasetError as e:
        raise DatasetError(f"{e}; {run_dir} cannot resume exactly without it: restore the file, or add restart=true "
                           "to move the run aside and start over") from None


def load_run(run_dir: Path, device: str = "auto", render_size: int | None = None
             ) -> tuple[TrainConfig, OffPolicyAgent, gym.Env]:
    """The config, agent (from the latest checkpoint) and an env of a finished or running run."""
    cfg_path, ckpt_path = run_dir / "config.yaml", run_dir / CHECKPOINT
    for path in (cfg_path, ckpt_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: is {run_dir} an ssrl run directory?")
    cfg = config_lib.load(cfg_path)
    state = read_checkpoint(run_dir, cfg)
    env = make_env(cfg, render_size)
    agent = make_agent(cfg, env.observation_space, env.action_space, resolve_device(device))
    try:
        agent.restore(state["agent"])
    except (KeyError, RuntimeError) as e:  # the weights do not fit the network the config builds
        raise CheckpointError(f"checkpoint {ckpt_path} does not match {cfg_path} ({e})") from None
    return cfg, agent, env
