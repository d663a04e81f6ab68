"""CURL (Srinivas, Laskin & Abbeel 2020): contrastive learning between two augmented views of each observation.

The query is the agent's encoder on one view, the key an EMA copy of the encoder on another; a bilinear
similarity ``q^T W k`` scores every query against every key and InfoNCE picks the matching one (the other
batch items are the negatives). Views come from the agent's augmentation: CURL's random crop is
``agent.augmentation=crop`` (e.g. ``size=100`` for its 100 -> 84 crops); the default random shift is a
crop of a padded image.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.config import CURLConfig
from ssrl.nn.utils import frozen_copy
from ssrl.representations.base import Loss, Representation, check, health


class CURL(Representation):
    sequence_length = 0

    def __init__(self, encoder: nn.Module, obs_space: gym.Space, action_space: gym.spaces.Box,
                 cfg: CURLConfig) -> None:
        super().__init__(encoder, obs_space, action_space, cfg)
        check(0.0 < cfg.tau <= 1.0, "tau", cfg.tau, "must be in (0, 1]")
        self.key_encoder = frozen_copy(encoder)
        self.W = nn.Parameter(torch.rand(encoder.features_dim, encoder.features_dim))

    def loss(self, batch: dict[str, Any], encoder: nn.Module, augment: nn.Module) -> Loss:
        obs = batch["obs"]
        query = encoder(augment(obs))
        with torch.no_grad():
            key = self.key_encoder(augment(obs))
        logits = query @ self.W @ key.T
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return loss, {"accuracy": accuracy, **health(query.detach(), key)}

    def ema_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.key_encoder, encoder)]
