"""Soft Actor-Critic on encoder features (SAC-AE/CURL style: the critic trains the encoder, the actor sees
detached features, targets use an EMA copy of the encoder, the temperature is learned)."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

from ssrl.agents.base import Metrics, OffPolicyAgent
from ssrl.config import EncoderConfig, RepresentationConfig, SACConfig
from ssrl.nn.utils import adam, mlp, orthogonal_init

LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


class GaussianActor(nn.Module):
    """tanh-squashed Gaussian policy with a state-dependent, bounded log-std."""

    def __init__(self, features_dim: int, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = mlp(features_dim, hidden_dim, 2 * action_dim)
        self.apply(orthogonal_init)

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        """The deterministic action (used for evaluation; consumes no randomness)."""
        return torch.tanh(self.net(features).chunk(2, dim=-1)[0])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(sampled action, log-probability of the sample)``."""
        mu, log_std = self.net(features).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        noise = torch.randn_like(mu)
        pre_tanh = mu + noise * log_std.exp()
        log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True) - 0.5 * math.log(2 * math.pi) * mu.shape[-1]
        action = torch.tanh(pre_tanh)
        log_prob = log_prob - torch.log(torch.relu(1 - action.pow(2)) + 1e-6).sum(-1, keepdim=True)
        return action, log_prob


class SAC(OffPolicyAgent):
    cfg: SACConfig

    def __init__(self, obs_space: gym.Space, action_space: gym.spaces.Box, cfg: SACConfig,
                 encoder_cfg: EncoderConfig, repr_cfg: RepresentationConfig, device: torch.device) -> None:
        self.encoder_tau = cfg.encoder_tau  # the base builds the EMA target encoder when it is set
        super().__init__(obs_space, action_space, cfg, encoder_cfg, repr_cfg, device)
        self.actor_update_every, self.target_update_every = cfg.actor_update_every, cfg.target_update_every
        self.actor = GaussianActor(self.encoder.features_dim, self.action_dim, cfg.hidden_dim)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))
        self.target_entropy = -float(self.action_dim)
        self.actor_opt = adam(self.actor.parameters(), lr=cfg.lr)
        self.alpha_opt = adam([self.log_alpha], lr=cfg.alpha_lr, betas=(cfg.alpha_beta, 0.999))
        self.to(device)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def policy(self, features: torch.Tensor, frame: int, eval_mode: bool) -> torch.Tensor:
        return self.actor.mean(features) if eval_mode else self.actor(features)[0]

    def target_value(self, next_features: torch.Tensor, frame: int) -> torch.Tensor:
        next_action, log_prob = self.actor(next_features)
        q1, q2 = self.critic_target(next_features, next_action)
        return torch.min(q1, q2) - self.alpha.detach() * log_prob

    def update_actor(self, features: torch.Tensor, frame: int) -> Metrics:
        """Maximise ``min Q - alpha * log pi`` on detached features, then tune the temperature."""
        action, log_prob = self.actor(features)
        q1, q2 = self.critic(features, action)
        actor_loss = (self.alpha.detach() * log_prob - torch.min(q1, q2)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))  # no critic weight gradients: nothing uses them
        self.actor_opt.step()

        alpha_loss = (self.alpha * (-log_prob - self.target_entropy).detach()).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": actor_loss.detach(), "alpha": self.alpha.detach(), "entropy": -log_prob.detach().mean()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return super().optimizers() | {"alpha": self.alpha_opt}
