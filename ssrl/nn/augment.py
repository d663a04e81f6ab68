"""Batched image augmentations applied in ``update()`` (never in ``act()``), on the training device.

Each augmentation maps an image batch (B, C, H, W) to images of the same dtype: uint8 stays uint8 until the
encoder normalises it. Random shifts and crops are one gather per batch (no padded float copy, no
``grid_sample``); their output is laid out channels-last, the layout the encoder's fast path uses.
``eval_view`` is what ``act()`` sees. Non-image entries (state vectors) pass through as float.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ssrl.nn.encoders import is_image_space

CROP_MARGIN = 16  # RAD/CURL: render 100x100, crop 84x84


def windows(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-sample ``height x width`` windows of ``x`` (B, C, H, W) at ``(top[i], left[i])``; coordinates outside
    the image repeat its border pixels (replicate padding). One gather; the result is channels-last in memory."""
    n, _, h, w = x.shape
    rows = (top.view(n, 1) + torch.arange(height, device=x.device)).clamp_(0, h - 1)
    cols = (left.view(n, 1) + torch.arange(width, device=x.device)).clamp_(0, w - 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return x[batch, :, rows.view(n, height, 1), cols.view(n, 1, width)].permute(0, 3, 1, 2)  # indexing puts C last


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


class RandomShift(Identity):
    """DrQ/DrQ-v2 random shift: replicate-pad by ``pad`` pixels, then a random (H, W) window per sample.

    Equal (to float rounding) to DrQ-v2's bilinear ``grid_sample`` at integer offsets, computed as a gather."""

    def __init__(self, pad: int = 4) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offsets = torch.randint(0, 2 * self.pad + 1, (x.shape[0], 2), device=x.device)  # (dx, dy) as in DrQ-v2
        return self.shift(x, offsets)

    def shift(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Windows at ``offsets`` (B, 2) = (dx, dy) in [0, 2 * pad] of the padded image."""
        _, _, h, w = x.shape
        return windows(x, offsets[:, 1] - self.pad, offsets[:, 0] - self.pad, h, w)


class RandomCrop(Identity):
    """RAD/CURL random crop of ``size - margin`` pixels per side; ``eval_view`` takes the centre crop."""

    def __init__(self, margin: int = CROP_MARGIN) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        top = torch.randint(0, self.margin + 1, (n,), device=x.device)
        left = torch.randint(0, self.margin + 1, (n,), device=x.device)
        return windows(x, top, left, h - self.margin, w - self.margin)

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        top = self.margin // 2
        return x[..., top : top + x.shape[-2] - self.margin, top : top + x.shape[-1] - self.margin]

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
