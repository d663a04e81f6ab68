"""SPR (Schwarzer et al. 2021): self-predictive representations.

From the encoding of observation ``t``, an action-conditioned transition model rolls the latent ``K`` steps
forward; a projection and a prediction head map each predicted latent to a vector that must match (cosine)
the target projection of the actually observed, augmented observation ``t+k``. Targets are EMA copies of
the encoder and the projection (``tau=1``, SPR's choice with augmentation, makes them stop-gradient copies
of the online weights).

The projection is BYOL's projector, Linear -> BatchNorm -> ReLU -> Linear (the target's BatchNorm uses the
target batch's statistics, as in BYOL). In SPR the projection is the first layer of the Q head, so the RL loss
keeps it informative; here it is a separate head, and without the BatchNorm, SPR trained alone (pretraining,
no RL loss) collapses: projection and target projection learn one constant output, the cosine loss goes to
0 and the encoder's features carry less state than at init. ``inverse_coef > 0`` adds SGI's inverse-dynamics
loss (Schwarzer et al. 2021b): predict ``a_t`` from the online ``z_t`` and ``z_{t+1}``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.config import SPRConfig
from ssrl.nn.heads import LatentTransition, project, projector
from ssrl.nn.utils import frozen_copy, mlp, orthogonal_init
from ssrl.representations.base import (
    Loss,
    Representation,
    check,
    cosine_loss,
    encode_sequence,
    health,
    take,
)


class SPR(Representation):
    def __init__(self, encoder: nn.Module, obs_space: gym.Space, action_space: gym.spaces.Box,
                 cfg: SPRConfig) -> None:
        super().__init__(encoder, obs_space, action_space, cfg)
        check(cfg.k >= 1, "k", cfg.k, "must be >= 1")
        check(0.0 < cfg.tau <= 1.0, "tau", cfg.tau, "must be in (0, 1]")
        check(cfg.inverse_coef >= 0, "inverse_coef", cfg.inverse_coef, "must be >= 0")
        self.sequence_length = cfg.k
        dim, action_dim = encoder.features_dim, int(np.prod(action_space.shape))
        self.transition = LatentTransition(dim, action_dim, cfg.hidden_dim)
        self.projection = projector(dim, cfg.hidden_dim, cfg.projection_dim)
        self.prediction = nn.Linear(cfg.projection_dim, cfg.projection_dim)
        self.inverse = mlp(2 * dim, cfg.hidden_dim, action_dim, depth=1) if cfg.inverse_coef > 0 else None
        self.apply(orthogonal_init)
        self.target_encoder = frozen_copy(encoder)
        self.target_projection = frozen_copy(self.projection)

    def loss(self, batch: dict[str, Any], encoder: nn.Module, augment: nn.Module) -> Loss:
        obs, actions = batch["obs"], batch["action"]  # (B, K+1, ...), (B, K, A)
        z0 = encoder(augment(take(obs, 0)))
        z, latents = z0, []
        for k in range(self.sequence_length):
            z = self.transition(z, actions[:, k])
            latents.append(z)
        prediction = self.prediction(project(self.projection, torch.stack(latents, 1)))
        with torch.no_grad():
            target = project(self.target_projection,
                             encode_sequence(self.target_encoder, augment, take(obs, slice(1, None))))
        per_step = cosine_loss(prediction, target).mean(0)  # (K,)
        loss = per_step.sum()
        metrics = {"cosine_step1": 1 - per_step[0].detach() / 2, "cosine_last": 1 - per_step[-1].detach() / 2,
                   "target_cosine": 1 - per_step.detach().mean() / 2, **health(z0.detach())}
        if self.inverse is not None:
            z1 = encoder(augment(take(obs, 1)))
            inverse = F.mse_loss(self.inverse(torch.cat([z0, z1], dim=-1)), actions[:, 0])
            loss = loss + self.cfg.inverse_coef * inverse
            metrics["inverse_error"] = inverse.detach()
        return loss, metrics

    def ema_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.target_encoder, encoder), (self.target_projection, self.projection)]
