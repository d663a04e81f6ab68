"""Self-supervised representation modules, selected by ``representation=<name>`` (names in
:mod:`ssrl.config.registry`)."""

from __future__ import annotations

import gymnasium as gym
from torch import nn

from ssrl.config import RepresentationConfig, implementation
from ssrl.representations.base import Representation


def make_representation(cfg: RepresentationConfig, encoder: nn.Module, obs_space: gym.Space,
                        action_space: gym.spaces.Box) -> Representation | None:
    """Build the module registered as ``cfg.name`` (``none`` gives ``None``: the agent trains with augmentation
    only)."""
    cls = implementation("representation", cfg.name)
    return None if cls is None else cls(encoder, obs_space, action_space, cfg)


__all__ = ["Representation", "make_representation"]
