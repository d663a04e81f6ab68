"""The interface every self-supervised objective implements to plug into every agent, and the helpers the
modules share (sequence folding, EMA targets, health metrics)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.config import ObjectiveConfig, RepresentationConfig
from ssrl.errors import ConfigError
from ssrl.nn.utils import soft_update

Obs = torch.Tensor | dict[str, torch.Tensor]
Loss = tuple[torch.Tensor, dict[str, torch.Tensor]]  # (loss, detached metrics)


class Representation(nn.Module):
    """A self-supervised loss on the agent's encoder.

    Subclasses set ``sequence_length`` (0: train on the agent's transition batch; K > 0: on replay sequences
    of K steps with actions and rewards) and ``trains_encoder`` (whether the loss's gradients reach the
    shared encoder; read from ``cfg.trains_encoder`` when the config is an ``ObjectiveConfig``). The agent owns the
    encoder and the optimizer: the optimizer steps :meth:`trainable_parameters` (this module's parameters, plus
    the encoder's when ``trains_encoder`` is true) on ``weight * loss`` in :meth:`step`, which then moves the EMA
    targets.

    Encoder-gradient rule: the critic loss always trains the encoder, the actor loss never does, and this
    module's loss does exactly when ``trains_encoder`` is true. When it is false the agent passes
    :meth:`encoder_view`'s no-grad view, so the loss trains only the module's own heads.

    The module never holds the agent's encoder (its parameters belong to the agent): it is the ``encoder``
    argument of :meth:`loss`, :meth:`step` and :meth:`ema_pairs`. EMA targets it owns are frozen copies made
    in the constructor.
    """

    sequence_length: int = 0
    trains_encoder: bool = True
    adds_intrinsic_reward: bool = False  # True: the agent adds :meth:`intrinsic_reward` to its batch rewards

    def __init__(self, encoder: nn.Module, obs_space: gym.Space, action_space: gym.spaces.Box,
                 cfg: RepresentationConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if isinstance(cfg, ObjectiveConfig):
            self.trains_encoder = cfg.trains_encoder

    def loss(self, batch: dict[str, Any], encoder: nn.Module, augment: nn.Module) -> Loss:
        """Return ``(loss, metrics)`` for a batch of uint8 observations (the module augments them itself)."""
        raise NotImplementedError

    def ema_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        """``(target, online)`` pairs that :meth:`update_targets` moves by EMA (none by default); ``encoder`` is
        the agent's."""
        return []

    def update_targets(self, encoder: nn.Module) -> None:
        """Move EMA targets after each optimizer step: ``target <- tau * online + (1 - tau) * target``."""
        for target, online in self.ema_pairs(encoder):
            soft_update(target, online, self.cfg.tau)

    def intrinsic_reward(self, batch: dict[str, Any], augment: nn.Module) -> torch.Tensor | None:
        """The bonus added to the agent's one-step batch rewards (shape ``(B,)``) when ``adds_intrinsic_reward``."""
        return None

    def encoder_view(self, encoder: nn.Module) -> nn.Module:
        """The encoder this module's loss may use: itself, or a no-grad view when ``trains_encoder`` is false."""
        return encoder if self.trains_encoder else NoGradView(encoder)

    def trainable_parameters(self, encoder: nn.Module) -> list[nn.Parameter]:
        """What the owner's optimizer for this loss steps: this module's parameters, plus ``encoder``'s when
        ``trains_encoder``."""
        return list(self.parameters()) + (list(encoder.parameters()) if self.trains_encoder else [])

    def step(self, batch: dict[str, Any], encoder: nn.Module, augment: nn.Module, optimizer: torch.optim.Optimizer,
             weight: float) -> dict[str, torch.Tensor]:
        """One ``optimizer`` step on ``weight * loss`` (through :meth:`encoder_view` of the agent's ``encoder``),
        then the EMA targets; returns the detached loss and metrics as ``repr_*``."""
        loss, metrics = self.loss(batch, self.encoder_view(encoder), augment)
        optimizer.zero_grad(set_to_none=True)
        (weight * loss).backward()
        optimizer.step()
        self.update_targets(encoder)
        return {"repr_loss": loss.detach(), **{f"repr_{k}": v for k, v in metrics.items()}}


class NoGradView:
    """Calls an encoder under ``torch.no_grad()``: features for a loss that must not train it."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        self.features_dim = encoder.features_dim

    def __call__(self, obs: Obs) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder(obs)


def check(condition: bool, key: str, value: Any, requirement: str) -> None:
    """Raise a :class:`ConfigError` naming ``representation.<key>`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"representation.{key}={value!r}: {requirement}")


def fold(obs: Obs) -> Obs:
    """``(B, T, ...)`` -> ``(B*T, ...)`` for a tensor or each entry of a dict."""
    if isinstance(obs, dict):
        return {k: fold(v) for k, v in obs.items()}
    return obs.flatten(0, 1)


def take(obs: Obs, index: Any) -> Obs:
    """``obs[:, index]`` for a tensor or each entry of a dict (time steps of a ``(B, T, ...)`` sequence)."""
    if isinstance(obs, dict):
        return {k: v[:, index] for k, v in obs.items()}
    return obs[:, index]


def batch_size(obs: Obs) -> int:
    return next(iter(obs.values())).shape[0] if isinstance(obs, dict) else obs.shape[0]


def encode_sequence(encoder: Any, augment: nn.Module, obs: Obs) -> torch.Tensor:
    """Augment and encode every step of a ``(B, T, ...)`` observation sequence; returns ``(B, T, features)``."""
    b = batch_size(obs)
    return encoder(augment(fold(obs))).unflatten(0, (b, -1))


def cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL/SPR's normalised regression ``2 - 2 cos(prediction, target)`` per row (last dim reduced)."""
    return 2.0 - 2.0 * F.cosine_similarity(prediction, target, dim=-1)


@torch.no_grad()
def health(online: torch.Tensor, target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Collapse metrics: mean per-dimension std of features across the batch (0 = collapsed) and, with a target,
    the mean cosine agreement of online and target features."""
    flat = online.reshape(-1, online.shape[-1])
    metrics = {"feature_std": flat.std(0).mean()}
    if target is not None:
        metrics["target_cosine"] = F.cosine_similarity(flat, target.reshape(-1, target.shape[-1]), dim=-1).mean()
    return metrics
