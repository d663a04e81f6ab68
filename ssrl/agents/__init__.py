"""Agents, selected by ``agent=<name>`` (names in :mod:`ssrl.config.registry`): ``sac``, ``drqv2``, ``ppo``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from ssrl.agents.base import Agent, OffPolicyAgent
from ssrl.config import TrainConfig, implementation


def make_agent(cfg: TrainConfig, obs_space: gym.Space, action_space: gym.spaces.Box, device: torch.device,
               env: Any = None) -> Agent:
    """The agent registered as ``cfg.agent.name``, built from the run's config (``env``: the run's batched env,
    which PPO steps itself)."""
    return implementation("agent", cfg.agent.name).from_config(cfg, obs_space, action_space, device, env)


__all__ = ["Agent", "OffPolicyAgent", "make_agent"]
