"""Masked modelling of short observation sequences (``k+1`` steps with their actions), for any observation.

* ``mask_space=latent`` (default; M-CURL, Zhu et al. 2020, with BYOL's regression instead of a contrastive loss):
  ``mask_ratio`` of the observations of each sequence are masked whole, after encoding. The encoder embeds only
  the visible ones, a learned mask token stands in for the others, a small transformer mixes the sequence with
  action tokens, and a projection/prediction head must match (cosine) the EMA target encoder and projection of
  the masked observations, which only the target encoder sees: each observation is encoded once. Masking most of
  the sequence (4 of 5) scored best (docs/representations.md).
* ``mask_space=input`` masks the inputs instead. Pixels (MLR, Yu et al. 2022): random spatio-temporal cubes
  (``cube_time`` steps x ``cube_size``^2 pixels) are blanked; the encoder embeds every masked frame and the head
  must match the EMA target of the *unmasked* frames (every frame encoded twice; masked and unmasked frames get
  the same augmentation). States: a ``mask_ratio`` fraction of state entries, plus a ``step_mask_ratio`` fraction
  of whole time steps, are zeroed; the transformer output reconstructs the masked entries (MSE in units of each
  dimension's batch std). Dict observations (``obs=pixels+state``) mask both and add both losses.
* The projection is BYOL's projector with BatchNorm, as in SPR: with a plain Linear-ReLU-Linear projection the
  objective trained alone (``ssrl pretrain``, no RL loss) tended to collapse (loss ~0.01, a linear probe of the
  physics state barely above the random encoder; tests/test_representations.py's probe test).
* ``variance_coef``/``covariance_coef`` > 0 add VICReg's variance and covariance terms on the online latents, as
  in ``world_model``; off by default (with input masking they raised the probe on cartpole only,
  docs/representations.md).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ssrl.config import MaskedConfig
from ssrl.nn.encoders import is_image_space
from ssrl.nn.heads import project, projector
from ssrl.nn.utils import frozen_copy
from ssrl.representations.base import (
    Loss,
    Obs,
    Representation,
    batch_size,
    check,
    cosine_loss,
    fold,
    health,
    variance_covariance,
)


def cube_mask(shape: tuple[int, ...], ratio: float, cube_time: int, cube_size: int,
              device: torch.device) -> torch.Tensor:
    """A boolean ``(B, T, H, W)`` mask (True = masked) made of ``cube_time x cube_size x cube_size`` cubes."""
    b, t, h, w = shape
    grid = torch.rand(b, -(-t // cube_time), -(-h // cube_size), -(-w // cube_size), device=device) < ratio
    grid = grid.repeat_interleave(cube_time, 1).repeat_interleave(cube_size, 2).repeat_interleave(cube_size, 3)
    return grid[:, :t, :h, :w]


class Masked(Representation):
    def __init__(self, encoder: nn.Module, obs_space: gym.Space, action_space: gym.spaces.Box,
                 cfg: MaskedConfig) -> None:
        super().__init__(encoder, obs_space, action_space, cfg)
        check(cfg.k >= 1, "k", cfg.k, "must be >= 1")
        latent = cfg.mask_space == "latent"
        check(0.0 < cfg.mask_ratio < 1.0, "mask_ratio", cfg.mask_ratio, "must be in (0, 1)")
        check(0.0 <= cfg.step_mask_ratio < 1.0, "step_mask_ratio", cfg.step_mask_ratio, "must be in [0, 1)")
        check(cfg.cube_size >= 1, "cube_size", cfg.cube_size, "must be >= 1")
        check(cfg.cube_time >= 1, "cube_time", cfg.cube_time, "must be >= 1")
        check(0.0 < cfg.tau <= 1.0, "tau", cfg.tau, "must be in (0, 1]")
        check(cfg.hidden_dim % cfg.heads == 0, "hidden_dim", cfg.hidden_dim, f"must be divisible by heads={cfg.heads}")
        self.sequence_length = cfg.k
        self.spaces = dict(obs_space.spaces) if isinstance(obs_space, gym.spaces.Dict) else {"obs": obs_space}
        self.dict_obs = isinstance(obs_space, gym.spaces.Dict)
        self.image_keys = [k for k, s in self.spaces.items() if is_image_space(s)]
        self.state_keys = [k for k in self.spaces if k not in self.image_keys]
        dim, width = encoder.features_dim, cfg.hidden_dim
        self.token = nn.Linear(dim, width)
        self.action_token = nn.Linear(int(np.prod(action_space.shape)), width)
        self.position = nn.Parameter(0.02 * torch.randn(1, cfg.k + 1, width))
        if latent:
            self.hidden_steps = min(cfg.k, max(1, int(cfg.mask_ratio * (cfg.k + 1) + 0.5)))  # masked per sequence
            self.mask_token = nn.Parameter(0.02 * torch.randn(width))
        layer = nn.TransformerEncoderLayer(width, cfg.heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.reconstruct = nn.ModuleDict({} if latent else {k: nn.Linear(width, self.spaces[k].shape[0])
                                                            for k in self.state_keys})
        self.predicts_latents = latent or bool(self.image_keys)  # against an EMA target encoder
        if self.predicts_latents:
            self.latent_head = nn.Linear(width, dim)
            self.projection = projector(dim, width, cfg.projection_dim)
            self.prediction = nn.Linear(cfg.projection_dim, cfg.projection_dim)
            self.target_encoder = frozen_copy(encoder)
            self.target_projection = frozen_copy(self.projection)

    def _split(self, obs: Obs) -> dict[str, torch.Tensor]:
        return obs if isinstance(obs, dict) else {"obs": obs}

    def _join(self, obs: dict[str, torch.Tensor]) -> Obs:
        return obs if self.dict_obs else obs["obs"]

    def _rows(self, obs: dict[str, torch.Tensor], mask: torch.Tensor) -> Obs:
        """The ``(B, T)`` steps of a sequence where ``mask`` is set, as a batch of observations (row-major order)."""
        return self._join({k: v[mask] for k, v in obs.items()})

    def mask(self, obs: Obs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Masked copies of a ``(B, T, ...)`` sequence and the boolean masks (True = hidden), per key."""
        cfg, masked, masks = self.cfg, {}, {}
        for key, x in self._split(obs).items():
            if key in self.image_keys:
                # One mask per distinct frame: stacked observations share frames (obs t holds frames t-s+1..t),
                # so masking each observation on its own would leave a masked frame visible in its neighbours.
                b, t, c, h, w = x.shape
                stack = c // 3 if c % 3 == 0 else 1  # RGB frames per observation, oldest first
                frames = cube_mask((b, t + stack - 1, h, w), cfg.mask_ratio, cfg.cube_time, cfg.cube_size, x.device)
                m = torch.stack([frames[:, j : j + t] for j in range(stack)], 2).repeat_interleave(c // stack, 2)
                masked[key] = x * ~m
            else:
                m = torch.rand(x.shape, device=x.device) < cfg.mask_ratio
                m = m | (torch.rand(*x.shape[:2], 1, device=x.device) < cfg.step_mask_ratio)
                masked[key] = x * ~m
            masks[key] = m
        return masked, masks

    def sequence(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The transformer over ``(B, T, width)`` observation tokens plus each step's action token (the last step,
        which has no action, a zero action's) and position."""
        padded = torch.cat([actions, actions.new_zeros(actions.shape[0], 1, actions.shape[-1])], dim=1)
        return self.transformer(tokens + self.action_token(padded) + self.position)

    def loss(self, batch: dict[str, Any], encoder: nn.Module, augment: nn.Module) -> Loss:
        if self.cfg.mask_space == "latent":
            return self.latent_loss(batch, encoder, augment)
        obs, actions = self._split(batch["obs"]), batch["action"]  # (B, T=k+1, ...), (B, k, A)
        b = batch_size(obs)
        masked, masks = self.mask(obs)
        # One augmentation for both: stack masked and original along the channel/feature axis, split after.
        both = augment(self._join({k: fold(torch.cat([masked[k], obs[k]], dim=2)) for k in obs}))
        both = self._split(both)
        view = {k: v[:, : v.shape[1] // 2] for k, v in both.items()}
        original = {k: v[:, v.shape[1] // 2 :] for k, v in both.items()}

        z = encoder(self._join(view))  # (B*T, d)
        out = self.sequence(self.token(z).unflatten(0, (b, -1)), actions)  # (B, T, width)

        loss, metrics = self.spread(z)
        if self.image_keys:
            prediction = self.prediction(project(self.projection, self.latent_head(out)))
            with torch.no_grad():
                target = self.target_projection(self.target_encoder(self._join(original))).unflatten(0, (b, -1))
            latent = cosine_loss(prediction, target).mean()
            loss = loss + latent
            metrics |= {"latent_loss": latent.detach(), "target_cosine": 1 - latent.detach() / 2}
        for key in self.state_keys:
            target = obs[key].float()
            scale = target.flatten(0, 1).std(0).clamp_min(1e-3)
            error = ((self.reconstruct[key](out) - target) / scale).pow(2)
            hidden = masks[key].float()
            state = (error * hidden).sum() / hidden.sum().clamp_min(1.0)
            loss = loss + state
            metrics[f"state_error_{key}" if self.dict_obs else "state_error"] = state.detach()
        return loss, metrics

    def latent_loss(self, batch: dict[str, Any], encoder: nn.Module, augment: nn.Module) -> Loss:
        """``mask_space=latent``: ``hidden_steps`` random observations of each sequence are replaced by the mask
        token after encoding; the online encoder sees only the others, the target encoder only the masked ones."""
        obs, actions = batch["obs"], batch["action"]  # (B, T=k+1, ...), (B, k, A)
        b, t = batch_size(obs), actions.shape[1] + 1
        frames = {k: v.unflatten(0, (b, t)) for k, v in self._split(augment(fold(obs))).items()}
        hidden = torch.rand(b, t, device=actions.device).argsort(1).argsort(1) < self.hidden_steps  # m per row
        z = encoder(self._rows(frames, ~hidden))  # (B*(T-m), d), rows in (sample, step) order
        visible = self.token(z)
        out = self.sequence(self.mask_token.expand(b, t, -1).masked_scatter(~hidden.unsqueeze(-1), visible), actions)
        prediction = self.prediction(self.projection(self.latent_head(out[hidden])))  # (B*m, projection_dim)
        with torch.no_grad():
            target = self.target_projection(self.target_encoder(self._rows(frames, hidden)))
        latent = cosine_loss(prediction, target).mean()
        spread, metrics = self.spread(z)
        return latent + spread, metrics | {"latent_loss": latent.detach(), "target_cosine": 1 - latent.detach() / 2}

    def spread(self, z: torch.Tensor) -> Loss:
        """VICReg's weighted variance and covariance terms on the online latents ``z`` (zero with the default
        coefficients) and the latents' health metrics."""
        variance, covariance = variance_covariance(z, self.cfg.variance_target)
        loss = self.cfg.variance_coef * variance + self.cfg.covariance_coef * covariance
        return loss, health(z.detach()) | {"variance": variance.detach(), "covariance": covariance.detach()}

    def ema_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        if not self.predicts_latents:
            return []
        return [(self.target_encoder, encoder), (self.target_projection, self.projection)]
