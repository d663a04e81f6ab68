"""The run's ``checkpoint.pt``: atomic writes, and reads checked against the config that resumes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ssrl import config as config_lib
from ssrl.config import TrainConfig
from ssrl.errors import CheckpointError, ConfigError

CHECKPOINT = "checkpoint.pt"

# Keys a resumed run may change; any other difference from the stored config is an error.
RESUMABLE_KEYS = {"frames", "eval_every", "eval_episodes", "checkpoint_every", "wandb", "wandb_project",
                  "wandb_mode", "progress", "device", "threads", "env_threads", "render_workers", "run_dir",
                  "experiment", "speed.channels_last", "speed.compile", "speed.prefetch"}
PRETRAIN_RESUMABLE_KEYS = {"progress", "device", "threads", "log_every", "checkpoint_every"}


def read_checkpoint(run_dir: Path, cfg: Any) -> dict[str, Any] | None:
    """The checkpoint in ``run_dir`` (None if there is none), checked against ``cfg``, a :class:`TrainConfig`
    (``ssrl train``) or a pretraining config (``ssrl pretrain``): a config that differs in keys outside
    ``RESUMABLE_KEYS`` (``PRETRAIN_RESUMABLE_KEYS``) is a :class:`ConfigError`. Call it before any work starts."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    training = isinstance(cfg, TrainConfig)
    where = "run_dir" if training else "out="
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which and what to do
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}). Move it away to start "
                              f"this run over, or use another {where}; nothing was changed.") from None
    try:  # a training config is rebuilt, so keys added since the run started take their defaults
        stored = config_lib.to_dict(config_lib.from_dict(state["config"])) if training else dict(state["config"])
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"checkpoint {path} holds no valid config ({e}); nothing was changed.") from None
    resumable = RESUMABLE_KEYS if training else PRETRAIN_RESUMABLE_KEYS
    changed = {k: v for k, v in config_lib.diff_dicts(stored, config_lib.to_dict(cfg)).items() if k not in resumable}
    if changed:
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        kind = "a run" if training else "a pretraining run"
        raise ConfigError(f"{run_dir} holds {kind} with a different config ({lines}). Use the same "
                          f"settings to resume, or a new {where}.")
    return state


def write_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a kill mid-write leaves the previous checkpoint intact."""
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
