"""The run's environments, built from its config."""

from __future__ import annotations

import gymnasium as gym
import torch

from ssrl.config import TrainConfig
from ssrl.envs import make
from ssrl.envs.batched import BatchedEnv, make_batched
from ssrl.errors import ConfigError


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
