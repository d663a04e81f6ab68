"""Seeds, reset seeds, RNG states (for checkpoints) and the device."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ssrl.errors import ConfigError


def episode_seed(*keys: int) -> int:
    """A reset seed derived from (run seed, stream, episode): independent streams, reproducible per episode."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` (CUDA if there is a GPU, else the CPU) or a torch device this machine has; anything else is a
    :class:`ConfigError` naming what this machine offers."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key}={name}: this machine has no CUDA GPU (torch {torch.__version__}); "
                              f"use {key}=cpu or {key}=auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key}={name}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}={name}: MPS is not available here; use {key}=cpu or {key}=auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{key}={name}: ssrl trains on cpu, cuda or mps")
    return device


def start_process(seed: int, threads: int, device: str) -> torch.device:
    """Seed Python, numpy and torch, set torch's CPU threads (0 keeps its default) and resolve ``device``."""
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return resolve_device(device)


def rng_state(rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Python's, ``rng``'s (if given), torch's and CUDA's random states."""
    return {"python": random.getstate(), "numpy": None if rng is None else rng.bit_generator.state,
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict[str, Any], rng: np.random.Generator | None = None) -> None:
    random.setstate(state["python"])
    if rng is not None:
        rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
