"""The interface every self-supervised objective implements to plug into every agent."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import nn


class Representation(nn.Module):
    """A self-supervised loss on the agent's encoder.

    Subclasses set ``sequence_length`` (0: train on the agent's transition batch; K > 0: on replay sequences
    of K steps with actions and rewards) and ``trains_encoder`` (whether the loss's gradients reach the
    shared encoder). The agent owns the optimizer: it steps this module's parameters, plus the encoder's
    when ``trains_encoder`` is true, on ``weight * loss``, then calls :meth:`update_targets`.
    """

    sequence_length: int = 0
    trains_encoder: bool = True

    def __init__(self, encoder: nn.Module, obs_space: gym.Space, action_space: gym.spaces.Box, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg

    def loss(self, batch: dict[str, Any], encoder: nn.Module, augment: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(loss, metrics)`` for a batch of uint8 observations (the module augments them itself)."""
        raise NotImplementedError

    def update_targets(self) -> None:
        """Move EMA targets after each optimizer step (no-op for modules without targets)."""
