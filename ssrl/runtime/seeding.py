"""Seeds, reset seeds, RNG states (for checkpoints) and the device."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def episode_seed(*keys: int) -> int:
    """A reset seed derived from (run seed, stream, episode): independent streams, reproducible per episode."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
