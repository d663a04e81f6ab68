"""Agents, selected by ``agent=<name>``: ``sac`` and ``drqv2``."""

from __future__ import annotations

import gymnasium as gym
import torch

from ssrl.agents.base import OffPolicyAgent
from ssrl.agents.drqv2 import DrQV2
from ssrl.agents.sac import SAC
from ssrl.config import TrainConfig

AGENTS: dict[str, type[OffPolicyAgent]] = {"sac": SAC, "drqv2": DrQV2}


def make_agent(cfg: TrainConfig, obs_space: gym.Space, action_space: gym.spaces.Box, device: torch.device) -> OffPolicyAgent:
    """Build the agent that ``cfg.agent.name`` names, with ``cfg.encoder`` and ``cfg.representation``, running
    with the ``cfg.speed`` settings."""
    agent = AGENTS[cfg.agent.name](obs_space, action_space, cfg.agent, cfg.encoder, cfg.representation, device)
    agent.set_speed(cfg.speed)
    return agent


__all__ = ["AGENTS", "SAC", "DrQV2", "OffPolicyAgent", "make_agent"]
