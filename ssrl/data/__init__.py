"""Replay storage and batch conversion."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ssrl.data.device_replay import DeviceReplay
from ssrl.data.host_replay import ReplayBuffer
from ssrl.data.protocol import Batch, Replay, SequenceBatch

__all__ = ["Batch", "DeviceReplay", "Replay", "ReplayBuffer", "SequenceBatch", "to_torch"]


def to_torch(batch: np.ndarray | torch.Tensor | dict[str, Any], device: str | torch.device
             ) -> torch.Tensor | dict[str, Any]:
    """Convert a (nested dict of) numpy array(s) or tensor(s) to tensors on ``device``; floats become float32.

    Other dtypes (uint8 images, bools) are kept. On CUDA, host memory is pinned and copied asynchronously.
    Tensors already on ``device`` with their target dtype are returned as they are (no copy).
    """
    device = torch.device(device)
    if isinstance(batch, dict):
        return {key: to_torch(value, device) for key, value in batch.items()}
    if isinstance(batch, torch.Tensor):
        return batch.to(device, torch.float32 if batch.is_floating_point() else batch.dtype)
    tensor = torch.from_numpy(np.asarray(batch))
    if tensor.is_floating_point():
        tensor = tensor.float()
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
