"""PPO run loop on batched envs: `ssrl train agent=ppo obs=state env=dmc/cartpole-balance num_envs=64`.

The same command runs thousands of envs on a GPU (`device=cuda num_envs=4096`). Logs `train.csv`
(frame, episode return/length of episodes finished in the rollout, env frames/s, losses) in `run_dir`
and saves `ppo.pt` at the end. Frames count environment (control) steps: agent steps x action repeat x envs.
On CPU, `threads=0` gives torch one thread: the physics thread pool (`env_threads`) owns the cores.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ssrl import config as config_lib
from ssrl.agents.ppo import PPO
from ssrl.config import TrainConfig
from ssrl.envs.batched import make_batched
from ssrl.errors import ConfigError
from ssrl.experiments.logger import CSVLog
from ssrl.experiments.train import start_process


def train_ppo(cfg: TrainConfig, verbose: bool = True) -> list[dict[str, Any]]:
    """Trains PPO (`agent=ppo`) for `cfg.frames` env frames; returns the logged rows."""
    device = start_process(cfg.seed, cfg.threads or 1, cfg.device)
    try:
        env = make_batched(cfg.env, config_lib.num_envs(cfg), device=device, backend=cfg.backend, seed=cfg.seed,
                           action_repeat=cfg.action_repeat or None, num_threads=cfg.env_threads)
    except ValueError as e:  # an env without a batched version, a bad backend
        raise ConfigError(f"env={cfg.env}: {e}") from None
    frames_per_update = cfg.agent.num_steps * env.num_envs * env.action_repeat
    total_updates = max(1, math.ceil(cfg.frames / frames_per_update))
    agent = PPO(env, cfg.agent, device, total_updates, cfg.encoder)
    run_dir = cfg.resolved_run_dir()
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
    torch.save({"config": config_lib.to_dict(cfg), **agent.state_dict()}, run_dir / "ppo.pt")
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
