"""The replay contract: what agents, representations and pretraining sample, whichever replay holds the data
(:class:`~ssrl.data.ReplayBuffer` on the host, :class:`~ssrl.data.DeviceReplay` on the training device, a
:class:`~ssrl.data.dataset.Dataset` of episode files)."""

from __future__ import annotations

from typing import Any, Protocol, TypedDict

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
    """What a replay offers its users."""

    def sample(self, batch_size: int, n_step: int | None = None) -> Batch: ...

    def sample_sequences(self, batch_size: int, length: int) -> SequenceBatch: ...

    def __len__(self) -> int: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
