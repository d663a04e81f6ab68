"""A deterministic latent world model (TD-MPC, Hansen, Wang & Su 2022) as an auxiliary objective.

From the encoding of observation ``t`` the model rolls out ``K`` actions open-loop: a dynamics network
predicts the next latent (regressed onto an EMA target encoder's encoding of the observed next observation,
TD-MPC's latent consistency) and a reward head predicts each reward; losses are discounted by ``rho^k``.
Optionally a decoder reconstructs the (pooled) observation from the latent (``decoder_coef > 0``). The
model's one-step prediction error can be added to the agent's reward as a curiosity bonus
(``intrinsic_coef > 0``, ICM, Pathak et al. 2017).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.config import WorldModelConfig
from ssrl.nn.heads import LatentTransition, ObservationDecoder
from ssrl.nn.utils import frozen_copy, mlp, orthogonal_init
from ssrl.representations.base import (
    Loss,
    Obs,
    Representation,
    check,
    encode_sequence,
    health,
    take,
    variance_covariance,
)


class WorldModel(Representation):
    def __init__(self, encoder: nn.Module, obs_space: gym.Space, action_space: gym.spaces.Box,
                 cfg: WorldModelConfig) -> None:
        super().__init__(encoder, obs_space, action_space, cfg)
        check(cfg.k >= 1, "k", cfg.k, "must be >= 1")
        check(0.0 < cfg.rho <= 1.0, "rho", cfg.rho, "must be in (0, 1]")
        check(0.0 < cfg.tau <= 1.0, "tau", cfg.tau, "must be in (0, 1]")
        for key in ("consistency_coef", "reward_coef", "decoder_coef", "intrinsic_coef"):
            check(getattr(cfg, key) >= 0, key, getattr(cfg, key), "must be >= 0")
        check(cfg.decoder_size >= 4 and cfg.decoder_size % 4 == 0, "decoder_size", cfg.decoder_size,
              "must be a positive multiple of 4")
        self.sequence_length = cfg.k
        self.adds_intrinsic_reward = cfg.intrinsic_coef > 0
        dim, action_dim = encoder.features_dim, int(np.prod(action_space.shape))
        self.dynamics = LatentTransition(dim, action_dim, cfg.hidden_dim)
        self.reward = mlp(dim + action_dim, cfg.hidden_dim, 1, depth=1)
        self.decoder = (ObservationDecoder(obs_space, dim, cfg.decoder_size, cfg.hidden_dim)
                        if cfg.decoder_coef > 0 else None)
        self.apply(orthogonal_init)
        self.target_encoder = frozen_copy(encoder)

    def loss(self, batch: dict[str, Any], encoder: nn.Module, augment: nn.Module) -> Loss:
        obs, actions, rewards = batch["obs"], batch["action"], batch["reward"]  # (B, K+1, ...), (B, K, A), (B, K)
        view = augment(take(obs, 0))
        z0 = encoder(view)
        with torch.no_grad():
            targets = encode_sequence(self.target_encoder, augment, take(obs, slice(1, None)))  # (B, K, d)
        z, predicted, predicted_rewards = z0, [], []
        for k in range(self.sequence_length):
            za = torch.cat([z, actions[:, k]], dim=-1)
            predicted_rewards.append(self.reward(za).squeeze(-1))
            z = self.dynamics(z, actions[:, k])
            predicted.append(z)
        latent_error = (torch.stack(predicted, 1) - targets).pow(2).mean(-1).mean(0)  # (K,)
        reward_error = (torch.stack(predicted_rewards, 1) - rewards).pow(2).mean(0)  # (K,)
        weights = self.cfg.rho ** torch.arange(self.sequence_length, device=z0.device, dtype=z0.dtype)
        consistency, reward = (weights * latent_error).sum(), (weights * reward_error).sum()
        variance, covariance = variance_covariance(z0, self.cfg.variance_target)
        loss = (self.cfg.consistency_coef * consistency + self.cfg.reward_coef * reward
                + self.cfg.variance_coef * variance + self.cfg.covariance_coef * covariance)
        metrics = {"consistency": consistency.detach(), "reward_error": reward.detach(),
                   "variance": variance.detach(), "covariance": covariance.detach(),
                   "prediction_error_step1": latent_error[0].detach(),
                   "prediction_error_last": latent_error[-1].detach()}
        if self.decoder is not None:
            reconstruction = self.decoder.loss(z0, view)
            loss = loss + self.cfg.decoder_coef * reconstruction
            metrics["reconstruction"] = reconstruction.detach()
        return loss, metrics | health(z0.detach()) | {
            "target_cosine": F.cosine_similarity(torch.stack(predicted, 1).detach(), targets, dim=-1).mean()}

    @torch.no_grad()
    def prediction_error(self, obs: Obs, action: torch.Tensor, next_obs: Obs, augment: nn.Module) -> torch.Tensor:
        """Per-sample one-step latent prediction error ``|dynamics(z, a) - z'|^2`` (target-encoder latents)."""
        z = self.target_encoder(augment.eval_view(obs))
        z_next = self.target_encoder(augment.eval_view(next_obs))
        return (self.dynamics(z, action) - z_next).pow(2).mean(-1)

    def intrinsic_reward(self, batch: dict[str, Any], augment: nn.Module) -> torch.Tensor | None:
        if not self.adds_intrinsic_reward:
            return None
        error = self.prediction_error(batch["obs"], batch["action"], batch["next_obs"], augment)
        return self.cfg.intrinsic_coef * error

    def ema_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.target_encoder, encoder)]
