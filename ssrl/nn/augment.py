"""Batched image augmentations applied in ``update()`` (never in ``act()``), on the training device.

Each augmentation maps a uint8 image batch (B, C, H, W) to float images in [0, 255]; ``eval`` is what
``act()`` sees. Non-image entries (state vectors) pass through unchanged.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.nn.encoders import is_image_space

CROP_MARGIN = 16  # RAD/CURL: render 100x100, crop 84x84


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


class RandomShift(Identity):
    """DrQ/DrQ-v2 random shift: replicate-pad by ``pad`` pixels, then a random (H, W) window per sample
    (sampled with bilinear ``grid_sample`` as DrQ-v2 does, so shifts are integer pixels)."""

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        assert h == w, f"RandomShift expects square images, got {h}x{w}"
        x = F.pad(x.float(), (self.pad,) * 4, mode="replicate")
        eps = 1.0 / (h + 2 * self.pad)
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * self.pad, device=x.device)[:h]
        arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
        base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
        shift = torch.randint(0, 2 * self.pad + 1, size=(n, 1, 1, 2), device=x.device, dtype=x.dtype)
        grid = base_grid + shift * (2.0 / (h + 2 * self.pad))
        return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


class RandomCrop(Identity):
    """RAD/CURL random crop of ``size - margin`` pixels per side; ``eval_view`` takes the centre crop."""

    def __init__(self, margin: int = CROP_MARGIN) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        out_h, out_w = h - self.margin, w - self.margin
        top = torch.randint(0, self.margin + 1, (n, 1, 1), device=x.device)
        left = torch.randint(0, self.margin + 1, (n, 1, 1), device=x.device)
        rows = (top + torch.arange(out_h, device=x.device).view(1, -1, 1)).expand(n, out_h, out_w)
        cols = (left + torch.arange(out_w, device=x.device).view(1, 1, -1)).expand(n, out_h, out_w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        return x[batch, :, rows, cols].permute(0, 3, 1, 2).float()  # advanced indexing puts C last

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        top = self.margin // 2
        return x[..., top : top + x.shape[-2] - self.margin, top : top + x.shape[-1] - self.margin].float()

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:-2], shape[-2] - self.margin, shape[-1] - self.margin)


AUGMENTATIONS = {"none": Identity, "shift": RandomShift, "crop": RandomCrop}


class Augment(nn.Module):
    """Applies an image augmentation to every image entry of an observation (tensor or dict of tensors)."""

    def __init__(self, name: str, space: gym.Space) -> None:
        super().__init__()
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation '{name}'; choose one of {', '.join(AUGMENTATIONS)}")
        self.aug = AUGMENTATIONS[name]()
        self.space = space

    def _map(self, obs: Any, space: gym.Space, fn: str) -> Any:
        if isinstance(space, gym.spaces.Dict):
            return {k: self._map(obs[k], s, fn) for k, s in space.spaces.items()}
        return getattr(self.aug, fn)(obs) if is_image_space(space) else obs.float()

    def forward(self, obs: Any) -> Any:
        return self._map(obs, self.space, "forward")

    def eval_view(self, obs: Any) -> Any:
        return self._map(obs, self.space, "eval_view")

    def output_space(self, space: gym.Space | None = None) -> gym.Space:
        """The observation space the encoder sees after augmentation."""
        space = self.space if space is None else space
        if isinstance(space, gym.spaces.Dict):
            return gym.spaces.Dict({k: self.output_space(s) for k, s in space.spaces.items()})
        if not is_image_space(space):
            return space
        return gym.spaces.Box(0, 255, self.aug.output_shape(space.shape), np.uint8)
