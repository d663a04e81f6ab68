"""Observation encoders, built from a gymnasium observation space (SB3's features-extractor idea).

Every encoder maps a batch of observations to ``features_dim`` features in [-1, 1] (LayerNorm + tanh, as in
SAC-AE/CURL). Pixel encoders take uint8 (or float in [0, 255]) channels-first images and normalise inside;
their ``memory_format`` (channels-last convolutions) and ``amp_dtype`` (autocast of the conv trunk) are speed
settings that :meth:`OffPolicyAgent.set_speed` sets.
"""

from __future__ import annotations

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.config import EncoderConfig
from ssrl.nn.utils import orthogonal_init


def is_image_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == "uint8"


def feature_head(in_dim: int, feature_dim: int) -> nn.Sequential:
    """SAC-AE/CURL's projection to features: Linear -> LayerNorm -> tanh."""
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class PixelEncoder(nn.Module):
    """SAC-AE/CURL encoder: ``num_layers`` 3x3 convs of ``num_filters`` (first stride 2), then
    Linear -> LayerNorm -> tanh to ``feature_dim``."""

    memory_format: torch.memory_format = torch.contiguous_format
    amp_dtype: torch.dtype | None = None

    def __init__(self, space: gym.spaces.Box, cfg: EncoderConfig) -> None:
        super().__init__()
        assert is_image_space(space), f"PixelEncoder needs a uint8 (C, H, W) Box space, got {space}"
        channels, height, width = space.shape
        assert height >= 16 and width >= 16, f"images of {height}x{width} are too small for the conv stack"
        # In-place ReLUs (a conv's backward needs its input, not its output): ~10% faster on CPU.
        layers: list[nn.Module] = [nn.Conv2d(channels, cfg.num_filters, 3, stride=2), nn.ReLU(inplace=True)]
        for _ in range(cfg.num_layers - 1):
            layers += [nn.Conv2d(cfg.num_filters, cfg.num_filters, 3, stride=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat_dim = self.convs(torch.zeros(1, *space.shape)).numel()
        self.head = feature_head(flat_dim, cfg.feature_dim)
        self.features_dim = cfg.feature_dim
        self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(obs).flatten(1))

    def trunk(self, obs: torch.Tensor) -> torch.Tensor:
        """The last conv layer's ``(B, num_filters, h, w)`` maps of uint8 images. The first conv sees
        ``obs / 255 - 0.5`` through folded weights (``W / 255``, ``b - 0.5 * sum W``; the conv is unpadded, so
        this is exact up to rounding), which spares two elementwise passes over the largest tensor of the update."""
        x = obs.to(torch.float32, memory_format=self.memory_format)
        first = self.convs[0]
        weight = first.weight / 255.0
        bias = first.bias - 0.5 * first.weight.sum((1, 2, 3))
        with torch.autocast(x.device.type, self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            h = self.convs[1:](F.conv2d(x, weight, bias, first.stride))
        return h.float()


class StateEncoder(nn.Module):
    """MLP for state vectors: Linear -> ReLU -> Linear -> LayerNorm -> tanh."""

    def __init__(self, space: gym.spaces.Box, cfg: EncoderConfig) -> None:
        super().__init__()
        assert len(space.shape) == 1, f"StateEncoder needs a flat Box space, got shape {space.shape}"
        self.net = nn.Sequential(
            nn.Linear(space.shape[0], cfg.state_hidden_dim),
            nn.ReLU(),
            nn.Linear(cfg.state_hidden_dim, cfg.feature_dim),
            nn.LayerNorm(cfg.feature_dim),
            nn.Tanh(),
        )
        self.features_dim = cfg.feature_dim
        self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


class MultiEncoder(nn.Module):
    """One encoder per entry of a Dict space; features are concatenated in key order."""

    def __init__(self, space: gym.spaces.Dict, cfg: EncoderConfig) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({key: make_encoder(sub, cfg) for key, sub in space.spaces.items()})
        self.features_dim = sum(e.features_dim for e in self.encoders.values())

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([enc(obs[key]) for key, enc in self.encoders.items()], dim=-1)


def make_encoder(space: gym.Space, cfg: EncoderConfig) -> nn.Module:
    """The encoder for ``space``: pixels -> :class:`PixelEncoder`, vectors -> :class:`StateEncoder`,
    dicts -> :class:`MultiEncoder`."""
    if isinstance(space, gym.spaces.Dict):
        return MultiEncoder(space, cfg)
    if is_image_space(space):
        return PixelEncoder(space, cfg)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return StateEncoder(space, cfg)
    raise ValueError(f"no encoder for observation space {space}: expected uint8 (C,H,W) images, vectors or a Dict")
