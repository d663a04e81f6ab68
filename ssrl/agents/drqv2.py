"""DrQ-v2-style DDPG: deterministic actor with scheduled, clipped Gaussian exploration noise, n-step
returns (from replay), targets computed with the online encoder."""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import nn

from ssrl.agents.base import Metrics, OffPolicyAgent
from ssrl.config import DrQV2Config, EncoderConfig, RepresentationConfig
from ssrl.nn.utils import adam, mlp, orthogonal_init, schedule


def noisy(mu: torch.Tensor, std: float, clip: float | None) -> torch.Tensor:
    """``mu`` plus Gaussian noise (clipped to ``+-clip``), kept in [-1, 1] with a straight-through gradient."""
    noise = torch.randn_like(mu) * std
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    action = mu + noise
    return action - action.detach() + action.detach().clamp(-1.0, 1.0)


class DrQV2(OffPolicyAgent):
    cfg: DrQV2Config

    def __init__(self, obs_space: gym.Space, action_space: gym.spaces.Box, cfg: DrQV2Config,
                 encoder_cfg: EncoderConfig, repr_cfg: RepresentationConfig, device: torch.device) -> None:
        super().__init__(obs_space, action_space, cfg, encoder_cfg, repr_cfg, device)
        self.actor = nn.Sequential(mlp(self.encoder.features_dim, cfg.hidden_dim, self.action_dim), nn.Tanh())
        self.actor.apply(orthogonal_init)
        self.actor_opt = adam(self.actor.parameters(), lr=cfg.lr)
        self.to(device)

    def stddev(self, frame: int) -> float:
        return schedule(self.cfg.stddev_schedule, frame)

    def policy(self, features: torch.Tensor, frame: int, eval_mode: bool) -> torch.Tensor:
        mu = self.actor(features)
        return mu if eval_mode else noisy(mu, self.stddev(frame), clip=None)

    def target_value(self, next_features: torch.Tensor, frame: int) -> torch.Tensor:
        next_action = noisy(self.actor(next_features), self.stddev(frame), self.cfg.stddev_clip)
        q1, q2 = self.critic_target(next_features, next_action)
        return torch.min(q1, q2)

    def update_actor(self, features: torch.Tensor, frame: int) -> Metrics:
        """Deterministic policy gradient through a clipped-noise action on detached features."""
        action = noisy(self.actor(features), self.stddev(frame), self.cfg.stddev_clip)
        q1, q2 = self.critic(features, action)
        actor_loss = -torch.min(q1, q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))  # no critic weight gradients: nothing uses them
        self.actor_opt.step()
        return {"actor_loss": actor_loss.detach(), "stddev": torch.tensor(self.stddev(frame))}
