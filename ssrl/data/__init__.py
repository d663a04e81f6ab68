"""Replay storage and batch conversion."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ssrl.data.replay import ReplayBuffer

__all__ = ["ReplayBuffer", "to_torch"]


def to_torch(batch: np.ndarray | dict[str, Any], device: str | torch.device) -> torch.Tensor | dict[str, Any]:
    """Convert a (nested dict of) numpy array(s) to tensors on ``device``; floats become float32.

    Other dtypes (uint8 images, bools) are kept. On CUDA, host memory is pinned and copied asynchronously.
    """
    device = torch.device(device)
    if isinstance(batch, dict):
        return {key: to_torch(value, device) for key, value in batch.items()}
    tensor = torch.from_numpy(np.asarray(batch))
    if tensor.is_floating_point():
        tensor = tensor.float()
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
