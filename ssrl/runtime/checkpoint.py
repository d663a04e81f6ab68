"""The run's ``checkpoint.pt``: atomic writes, and reads checked against the config that resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ssrl import config as config_lib
from ssrl import files
from ssrl.config import TrainConfig
from ssrl.errors import CheckpointError, ConfigError

CHECKPOINT = "checkpoint.pt"

# Keys a resumed run may change; any other difference from the stored config is an error.
RESUMABLE_KEYS = {"frames", "eval_every", "eval_episodes", "checkpoint_every", "wandb", "wandb_project",
                  "wandb_mode", "progress", "device", "threads", "env_threads", "render_workers", "run_dir",
                  "experiment", "speed.channels_last", "speed.compile", "speed.prefetch", "speed.keep_memory",
                  "restart", "guard.max_abs_loss", "guard.check_every"}
PRETRAIN_RESUMABLE_KEYS = {"progress", "device", "threads", "log_every", "checkpoint_every", "restart",
                           "guard.max_abs_loss", "guard.check_every"}
CONFIG_FILE = "config.yaml"


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
    except Exception as e:  # a truncated or foreign file: say which and what to do (not torch's advice)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = type(e).__name__ if "weights_only" in str(e) or not reason else f"{type(e).__name__}: {reason}"
        raise CheckpointError(f"checkpoint {path} is unreadable ({reason[:200]}): restore it from a copy, or add "
                              f"restart=true to move this run aside and start over; nothing was changed.") from None
    try:  # keys added since the run started take their defaults, or the value the run had (config_lib.complete)
        if training:
            stored = config_lib.to_dict(config_lib.from_dict(state["config"]))
        else:
            name = state["config"]["representation"]["name"]
            defaults = config_lib.apply_overrides(type(cfg)(), [f"representation={name}"])
            stored = config_lib.complete(state["config"], config_lib.to_dict(defaults))
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
    with files.atomic_writer(run_dir / CHECKPOINT) as f:
        torch.save(state, f)


def check_config_file(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse to overwrite a ``config.yaml`` in ``run_dir`` that is invalid or differs from ``cfg`` outside
    ``RESUMABLE_KEYS``: it records the run (ssrl never reads it back to train), so an edit there is a mistake
    to point out, not to erase."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return
    try:
        recorded = config_lib.load(path)
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path} is not a valid config ({e}). It records this run and is not read back: restore "
                          "it, or move it away (the run's checkpoint holds its config); nothing was changed.") from None
    changed = {k: v for k, v in config_lib.diff(recorded, cfg).items() if k not in RESUMABLE_KEYS}
    if changed:
        lines = ", ".join(f"{k}: {a!r} in the file, {b!r} here" for k, (a, b) in changed.items())
        raise ConfigError(f"{path} differs from this run's config ({lines}). config.yaml records a run and is not "
                          "read back: undo the edit, pass changes as key=value to a new run_dir, or add "
                          "restart=true to move the old run aside.")
