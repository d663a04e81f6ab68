"""PPO run loop on batched envs: `ssrl ppo env=dmc/cartpole-balance num_envs=64 frames=200000`.

The same command runs thousands of envs on a GPU (`device=cuda num_envs=4096`). Logs `train.csv`
(frame, episode return/length of episodes finished in the rollout, env frames/s, losses) in `run_dir`
and saves `ppo.pt` at the end. Frames count environment (control) steps: agent steps x action repeat.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch

from ssrl import config as config_lib
from ssrl.agents.ppo import PPO, PPOConfig
from ssrl.envs.batched import make_batched
from ssrl.errors import ConfigError
from ssrl.experiments.logger import CSVLog
from ssrl.experiments.train import start_process


@dataclasses.dataclass
class PPORunConfig:
    """A PPO run; `agent.*` keys set PPO hyperparameters (e.g. agent.num_steps=64)."""

    env: str = "dmc/cartpole-balance"
    num_envs: int = 64
    frames: int = 1_000_000
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    backend: str = "auto"  # cpu | warp | auto (see ssrl.envs.batched.make_batched)
    action_repeat: int = 0  # 0: the task's default
    threads: int = 0  # CPU threads for physics (0: all)
    torch_threads: int = 1  # torch intra-op threads on CPU (0: torch's default); more oversubscribe the physics pool
    run_dir: str = ""  # default runs/ppo/<env>/<seed>
    agent: PPOConfig = dataclasses.field(default_factory=PPOConfig)


def parse_ppo_overrides(args: list[str]) -> PPORunConfig:
    """A PPORunConfig from `key=value` strings; unknown keys raise ConfigError naming them."""
    cfg = config_lib.apply_overrides(PPORunConfig(), args)  # same rules as `ssrl train`
    if cfg.num_envs <= 0 or cfg.frames <= 0 or cfg.agent.num_steps <= 0 or cfg.agent.minibatches <= 0:
        raise ConfigError("num_envs, frames, agent.num_steps and agent.minibatches must be positive")
    if cfg.num_envs * cfg.agent.num_steps < cfg.agent.minibatches:
        raise ConfigError("agent.minibatches exceeds num_envs * agent.num_steps transitions per rollout")
    return cfg


def train_ppo(cfg: PPORunConfig, verbose: bool = True) -> list[dict[str, Any]]:
    """Trains PPO for `cfg.frames` env frames; returns the logged rows."""
    device = start_process(cfg.seed, max(cfg.torch_threads, 0), cfg.device)
    env = make_batched(cfg.env, cfg.num_envs, device=device, backend=cfg.backend, seed=cfg.seed,
                       action_repeat=cfg.action_repeat or None, num_threads=cfg.threads)  # fmt: skip
    frames_per_update = cfg.agent.num_steps * cfg.num_envs * env.action_repeat
    total_updates = max(1, math.ceil(cfg.frames / frames_per_update))
    agent = PPO(env, cfg.agent, device, total_updates)
    run_dir = Path(cfg.run_dir or f"runs/ppo/{cfg.env.replace('/', '-')}/{cfg.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    log = CSVLog(run_dir / "train.csv")
    obs, _ = env.reset(seed=cfg.seed)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for update in range(total_updates):
        obs, episodes = agent.collect(obs)
        metrics = agent.update(obs)
        frame = (update + 1) * frames_per_update
        fps = round(frame / (time.perf_counter() - start))
        row: dict[str, Any] = {"frame": frame, "update": update + 1, "fps": fps}
        if episodes:
            row["episode_return"] = sum(r for r, _ in episodes) / len(episodes)
            row["episode_length"] = sum(n for _, n in episodes) / len(episodes)
        row.update(metrics)
        log.write(row)
        rows.append(row)
        if verbose and "episode_return" in row:
            print(f"frame {frame:>9}  return {row['episode_return']:8.1f}  fps {row['fps']:>7}")
    torch.save({"config": dataclasses.asdict(cfg), **agent.state_dict()}, run_dir / "ppo.pt")
    env.close()
    return rows


@torch.no_grad()
def evaluate(agent: PPO, env: Any) -> float:
    """Mean return of one deterministic-policy episode per env (env is reset first)."""
    obs, _ = env.reset()
    returns = torch.full((env.num_envs,), float("nan"))
    while returns.isnan().any():
        obs, _, _, _, info = env.step(agent.model.act(obs.to(agent.device), deterministic=True))
        if "episode" in info:
            first = info["_episode"].cpu() & returns.isnan()
            returns[first] = info["episode"]["r"].cpu()[first]
    return float(returns.mean())
