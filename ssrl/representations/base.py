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


def variance_covariance(features: torch.Tensor, target_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's regularisers (Bardes, Ponce & LeCun 2022) on a batch of features ``(N, d)``: the variance term
    ``mean_j relu(target_std - sqrt(Var_j + 1e-4))`` (each dimension keeps a std across the batch) and the
    covariance term ``sum_{i != j} C_ij^2 / d`` (``C`` the unbiased covariance matrix; dimensions decorrelate)."""
    flat = features.reshape(-1, features.shape[-1])
    n, d = flat.shape
    centred = flat - flat.mean(0)
    cov = centred.T @ centred / (n - 1)
    variance = F.relu(target_std - torch.sqrt(cov.diagonal() + 1e-4)).mean()
    covariance = (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d
    return variance, covariance


@torch.no_grad()
def feature_std(features: torch.Tensor) -> torch.Tensor:
    """Mean over feature dimensions of each dimension's std across the batch (0: every input gives one output)."""
    return features.reshape(-1, features.shape[-1]).std(0).mean()


@torch.no_grad()
def effective_rank(features: torch.Tensor) -> torch.Tensor:
    """Effective rank (Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality"):
    ``exp(H(p))`` with ``p_k = s_k / sum_j s_j`` the normalised singular values of the ``(N, d)`` feature matrix
    and ``H`` the Shannon entropy (natural log, ``0 log 0 = 0``). It lies in ``[1, min(N, d)]``, equals ``r`` when
    ``r`` nonzero singular values are equal, and is 0 for an all-zero matrix. Taken on the features as they are
    (not centred), as RankMe (Garrido et al. 2023) does: features that collapsed onto one vector have rank ~1."""
    s = torch.linalg.svdvals(features.reshape(-1, features.shape[-1]).double())
    if float(s.sum()) == 0.0:
        return s.new_zeros(())
    p = s / s.sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


# Measured on frozen 50-d features (8-filter encoder) of 1008 cartpole frames (tests/test_representations.py's
# probe tests): modules after CI-sized pretraining std 0.2-0.6 (one near-collapsed SPR seed: 0.011) and rank
# 13-26; the random encoder std 0.08-0.52, rank 10-38; collapsed objectives (CURL without negatives, masked with a
# plain projection) std 0.001-0.009 and rank 1.1-1.7.
MIN_FEATURE_STD, MIN_EFFECTIVE_RANK = 0.01, 4.0


@torch.no_grad()
def collapse(features: torch.Tensor, min_std: float = MIN_FEATURE_STD,
             min_rank: float = MIN_EFFECTIVE_RANK) -> list[str]:
    """A collapse detector for a batch of frozen features ``(N, d)`` of varied inputs: the reasons they look
    collapsed (empty: healthy) - :func:`feature_std` below ``min_std`` (every input maps to nearly one point) or
    :func:`effective_rank` below ``min_rank`` (the features span only a few directions)."""
    std, rank = float(feature_std(features)), float(effective_rank(features))
    reasons = []
    if not std >= min_std:
        reasons.append(f"feature std across the batch {std:.4f} < {min_std}")
    if not rank >= min_rank:
        reasons.append(f"effective rank {rank:.2f} < {min_rank}")
    return reasons


@torch.no_grad()
def health(online: torch.Tensor, target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Collapse metrics: :func:`feature_std` of the features across the batch (0 = collapsed) and, with a target,
    the mean cosine agreement of online and target features."""
    flat = online.reshape(-1, online.shape[-1])
    metrics = {"feature_std": feature_std(flat)}
    if target is not None:
        metrics["target_cosine"] = F.cosine_similarity(flat, target.reshape(-1, target.shape[-1]), dim=-1).mean()
    return metrics
