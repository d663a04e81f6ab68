"""Self-supervised representation modules, selected by ``representation=<name>``."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from torch import nn

from ssrl.representations.base import Representation
from ssrl.representations.curl import CURL
from ssrl.representations.masked import Masked
from ssrl.representations.spr import SPR
from ssrl.representations.world_model import WorldModel

REGISTRY: dict[str, type[Representation]] = {"curl": CURL, "spr": SPR, "masked": Masked, "world_model": WorldModel}


def make_representation(cfg: Any, encoder: nn.Module, obs_space: gym.Space, action_space: gym.spaces.Box) -> Representation | None:
    """Build the module named by ``cfg.name`` (``none`` gives ``None``: the agent trains with augmentation only)."""
    if cfg.name == "none":
        return None
    if cfg.name not in REGISTRY:
        raise ValueError(f"unknown representation '{cfg.name}'; choose one of: none, {', '.join(REGISTRY)}")
    return REGISTRY[cfg.name](encoder, obs_space, action_space, cfg)


__all__ = ["CURL", "REGISTRY", "SPR", "Masked", "Representation", "WorldModel", "make_representation"]
