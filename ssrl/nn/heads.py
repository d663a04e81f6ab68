"""Heads the self-supervised objectives share: a latent transition model, BYOL's projector and observation
decoders."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.nn.encoders import is_image_space
from ssrl.nn.utils import mlp

Obs = torch.Tensor | dict[str, torch.Tensor]


class LatentTransition(nn.Module):
    """``z_{t+1} = tanh(LayerNorm(MLP([z_t, a_t])))``: stays in the encoder's feature range."""

    def __init__(self, features_dim: int, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(mlp(features_dim + action_dim, hidden_dim, features_dim, depth=1),
                                 nn.LayerNorm(features_dim), nn.Tanh())

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, action], dim=-1))


def projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """BYOL's projection head: Linear -> BatchNorm -> ReLU -> Linear on ``(N, in_dim)`` rows."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


def project(head: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Apply a row-wise head with BatchNorm to ``(B, T, D)`` latents (statistics over all ``B*T`` rows)."""
    return head(z.flatten(0, 1)).unflatten(0, z.shape[:2])


class PixelDecoder(nn.Module):
    """Latent -> (C, size, size) image in [-0.5, 0.5]: linear, then two stride-2 transposed convs."""

    def __init__(self, features_dim: int, channels: int, size: int, filters: int = 32) -> None:
        super().__init__()
        self.filters, self.base = filters, size // 4
        self.fc = nn.Linear(features_dim, filters * self.base**2)
        self.deconv = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(filters, filters, 4, 2, 1), nn.ReLU(),
                                    nn.ConvTranspose2d(filters, channels, 4, 2, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, self.filters, self.base, self.base))


class ObservationDecoder(nn.Module):
    """Reconstructs every entry of an observation: images pooled to ``size`` pixels, state vectors as they are."""

    def __init__(self, space: gym.Space, features_dim: int, size: int, hidden_dim: int) -> None:
        super().__init__()
        spaces = dict(space.spaces) if isinstance(space, gym.spaces.Dict) else {"obs": space}
        self.size = size
        self.heads = nn.ModuleDict({
            key: PixelDecoder(features_dim, sub.shape[0], size) if is_image_space(sub)
            else mlp(features_dim, hidden_dim, int(np.prod(sub.shape)), depth=1)
            for key, sub in spaces.items()
        })

    def loss(self, z: torch.Tensor, view: Obs) -> torch.Tensor:
        """Mean squared reconstruction error of the augmented view the encoder saw (images scaled to [-0.5, 0.5])."""
        views = view if isinstance(view, dict) else {"obs": view}
        total = z.new_zeros(())
        for key, head in self.heads.items():
            target = views[key]
            if isinstance(head, PixelDecoder):
                target = F.adaptive_avg_pool2d(target / 255.0 - 0.5, self.size)
            total = total + F.mse_loss(head(z), target)
        return total


class SpatialSoftmax(nn.Module):
    """Keypoints of conv maps (Levine et al. 2016, robomimic): a 1x1 conv to ``keypoints`` maps, a softmax over
    each map's positions, and each map's expected ``(x, y)`` in [-1, 1] (x across the width)."""

    def __init__(self, channels: int, keypoints: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, keypoints, 1)
        self.out_dim = 2 * keypoints

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        h, w = maps.shape[-2:]
        attention = self.conv(maps).flatten(2).softmax(-1)  # (B, K, h*w)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=maps.device),
                                torch.linspace(-1, 1, w, device=maps.device), indexing="ij")
        return (attention @ torch.stack([xs.flatten(), ys.flatten()], -1)).flatten(1)  # (B, 2K): x0, y0, x1, ...
