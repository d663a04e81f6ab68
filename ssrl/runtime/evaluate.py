"""Deterministic-policy evaluation in a single env or in batched envs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from ssrl.envs.batched import BatchedEnv
from ssrl.errors import DivergenceError
from ssrl.runtime.seeding import episode_seed


class Actor(Protocol):
    """What :func:`evaluate` needs of a policy (off-policy agents, a PPO run's ``Policy``)."""

    def act(self, obs: Any, frame: int, eval_mode: bool) -> np.ndarray: ...

    def train(self, mode: bool = True) -> Any: ...


def evaluate(agent: Actor, env: gym.Env, episodes: int, seed: int, frame: int,
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
            action = agent.act(obs, frame, eval_mode=True)
            if not np.isfinite(action).all():
                raise DivergenceError(f"the policy's action is not finite in the evaluation at frame {frame:,}")
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    agent.train(True)
    return returns


@torch.no_grad()
def evaluate_batched(act: Callable[[torch.Tensor], torch.Tensor], env: BatchedEnv, seed: int) -> list[float]:
    """Return of the first episode of each of ``env``'s envs under the (deterministic) policy ``act``, from a
    reset with ``seed``."""
    obs, _ = env.reset(seed=seed)
    returns = torch.full((env.num_envs,), float("nan"), device=env.device)
    while bool(returns.isnan().any()):
        action = act(obs)
        if not bool(torch.isfinite(action).all()):
            raise DivergenceError("the policy's action is not finite in the evaluation")
        obs, _, _, _, info = env.step(action)
        if "episode" in info:
            first = info["_episode"] & returns.isnan()
            returns = torch.where(first, info["episode"]["r"], returns)
    return returns.tolist()
