"""The replay contract: what agents, representations and pretraining sample, whichever replay holds the data
(:class:`~ssrl.data.ReplayBuffer` on the host, :class:`~ssrl.data.DeviceReplay` on the training device, a
:class:`~ssrl.data.dataset.Dataset` of episode files)."""

from __future__ import annotations

from typing import Any, Protocol, TypedDict

import gymnasium as gym
import numpy as np
import torch

Array = np.ndarray | torch.Tensor
Obs = Array | dict[str, Array]


class Batch(TypedDict):
    """``B`` n-step transitions: ``obs``/``next_obs`` in the env's layout (uint8 image stacks, float32 vectors),
    ``action`` (B, *A) float32, ``reward`` (B,) float32 = sum_{i<m} gamma^i r_{t+i} and ``discount`` (B,) float32
    = gamma^m, 0 if the episode terminated within the m steps (m = n_step, or fewer at an episode's end)."""

    obs: Obs
    action: Array
    reward: Array
    discount: Array
    next_obs: Obs


class SequenceBatch(TypedDict):
    """``B`` sequences of ``K`` steps inside one episode: ``obs`` (B, K+1, ...), ``action`` (B, K, *A) (action i
    leads from obs i to obs i+1), ``reward`` (B, K) one-step rewards, ``terminated`` (B, K) bool (obs i+1 is a
    terminal state)."""

    obs: Obs
    action: Array
    reward: Array
    terminated: Array


class Replay(Protocol):
    """What a replay offers its users. Every replay uses one step convention: step ``t`` holds observation ``t``,
    the action taken at it and the reward received after it."""

    def sample(self, batch_size: int, n_step: int | None = None) -> Batch: ...

    def sample_sequences(self, batch_size: int, length: int) -> SequenceBatch: ...

    def __len__(self) -> int: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    rng_state: Any  # the sampling stream's state: read it, and set it to go back to that point of the stream


def frame_layout(obs_space: gym.Space, frame_stack: int) -> dict[str, tuple[int, tuple[int, ...], np.dtype]]:
    """Per observation key ("obs" for a Box): frames per stack (``frame_stack`` for uint8 (C, H, W) images, else
    1), the shape of one stored frame and its dtype. Checks that every entry is a Box that can be stored so."""
    spaces = dict(obs_space.spaces) if isinstance(obs_space, gym.spaces.Dict) else {"obs": obs_space}
    layout = {}
    for key, space in spaces.items():
        if not isinstance(space, gym.spaces.Box) or not space.shape:
            raise TypeError(f"observation {key!r} must be a Box with at least one dim, got {space}")
        k = frame_stack if space.dtype == np.uint8 and len(space.shape) == 3 else 1
        if space.shape[0] % k:
            raise ValueError(f"{key!r}: {space.shape[0]} channels not divisible by frame_stack={k}")
        layout[key] = (k, (space.shape[0] // k, *space.shape[1:]), space.dtype)
    return layout


def format_bytes(nbytes: float) -> str:
    """``1.23 MB``-style sizes for memory estimates."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes:.0f} B"
