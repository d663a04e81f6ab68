"""Offline pretraining of a pixel encoder with any representation module: ``ssrl pretrain``.

``Pretrainer(cfg).run()`` samples batches from a dataset exactly as the agent samples replay (transitions, or
sequences of ``sequence_length`` steps), steps AdamW with linear warmup then cosine decay on the module's loss,
logs ``pretrain.csv``, checkpoints to ``checkpoint.pt`` (rerunning the same command resumes exactly), and writes
the encoder as a backbone (``backbone.safetensors`` + ``backbone.json``) into ``out``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from ssrl import config as config_lib
from ssrl.nn.backbone import Backbone, make_card, pixel_encoder_args
from ssrl.config import CURLConfig, EncoderConfig
from ssrl.data import to_torch
from ssrl.data.dataset import Dataset, pixel_key, read_meta
from ssrl.errors import CheckpointError, ConfigError
from ssrl.runtime.logger import CSVLog
from ssrl.runtime.seeding import start_process
from ssrl.nn.augment import Augment
from ssrl.nn.encoders import PixelEncoder
from ssrl.representations import REGISTRY

CHECKPOINT = "checkpoint.pt"
RESUMABLE_KEYS = {"progress", "device", "threads", "log_every", "checkpoint_every"}
console = Console()


@dataclass
class PretrainConfig:
    """One pretraining run. ``representation.lr`` is the peak learning rate."""

    data: str = ""
    out: str = ""
    steps: int = 10_000
    batch_size: int = 128
    weight_decay: float = 0.01
    warmup: int = 500  # linear warmup steps, then cosine decay to 0 at `steps`
    augmentation: str = "shift"  # "shift" or "none" (crops would change the backbone's input size)
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 1000
    device: str = "auto"
    threads: int = 0
    progress: bool = True
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    representation: Any = field(default_factory=CURLConfig)


def parse(args: list[str]) -> PretrainConfig:
    """A validated :class:`PretrainConfig` from ``key=value`` strings."""
    cfg = config_lib.apply_overrides(PretrainConfig(), args)
    if not cfg.data or not cfg.out:
        raise ConfigError("ssrl pretrain needs data=<dataset dir> and out=<backbone dir>")
    if cfg.representation.name not in REGISTRY:
        raise ConfigError(f"representation={cfg.representation.name}: choose one of {', '.join(REGISTRY)}")
    for key in ("steps", "batch_size", "log_every", "checkpoint_every"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key}={getattr(cfg, key)}: must be positive")
    if not 0 <= cfg.warmup < cfg.steps:
        raise ConfigError(f"warmup={cfg.warmup}: must be in [0, steps)")
    if cfg.augmentation not in ("shift", "none"):
        raise ConfigError(f"augmentation={cfg.augmentation!r}: choose shift or none")
    if cfg.encoder.pretrained:
        raise ConfigError("encoder.pretrained: ssrl pretrain starts from a fresh encoder")
    return cfg


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


class Pretrainer:
    """Holds one pretraining run; ``run()`` trains (or resumes) and writes the backbone."""

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = start_process(cfg.seed, cfg.threads, cfg.device)
        self.data = Dataset(cfg.data, pixel_key(read_meta(cfg.data)), seed=cfg.seed)
        space = self.data.observation_space
        self.augment = Augment(cfg.augmentation, space).to(self.device)
        self.encoder = PixelEncoder(self.augment.output_space(), cfg.encoder).to(self.device)
        self.module = REGISTRY[cfg.representation.name](self.encoder, space, self.data.action_space, cfg.representation)
        self.module.to(self.device)
        if not self.module.trains_encoder:
            raise ConfigError(f"representation.trains_encoder=false: {cfg.representation.name} would not train the "
                              "encoder, so there is nothing to pretrain")
        params = list(self.module.parameters()) + list(self.encoder.parameters())
        self.opt = torch.optim.AdamW(params, lr=cfg.representation.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg.warmup, cfg.steps))
        self.step = 0
        self.elapsed = 0.0
        self.out.mkdir(parents=True, exist_ok=True)
        self._resume()
        self.log = CSVLog(self.out / "pretrain.csv")
        self.log.truncate_after(self.step)

    # ----------------------------------------------------------------------------------------- state
    def _config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def _resume(self) -> None:
        path = self.out / CHECKPOINT
        if not path.exists():
            return
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:
            raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); move it away to start "
                                  "over") from None
        stored, now = state["config"], self._config_dict()
        changed = [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in now.items()
                   if k not in RESUMABLE_KEYS and stored.get(k) != v]
        if changed:
            raise ConfigError(f"{self.out} holds a pretraining run with a different config ({', '.join(changed)}); "
                              "use the same settings to resume, or a new out=")
        self.encoder.load_state_dict(state["encoder"])
        self.module.load_state_dict(state["module"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.data.load_state_dict(state["data"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        console.print(f"[bold]resumed[/] {self.out} at step {self.step:,}")

    def save_checkpoint(self) -> None:
        state = {"config": self._config_dict(), "step": self.step, "elapsed": self.elapsed,
                 "encoder": self.encoder.state_dict(), "module": self.module.state_dict(),
                 "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "data": self.data.state_dict(),
                 "torch_rng": torch.get_rng_state()}
        tmp = self.out / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.out / CHECKPOINT)

    # -------------------------------------------------------------------------------------- training
    def batch(self) -> dict[str, Any]:
        k = self.module.sequence_length
        raw = self.data.sample_sequences(self.cfg.batch_size, k) if k > 0 else self.data.sample(self.cfg.batch_size)
        return to_torch(raw, self.device)

    def train_step(self) -> dict[str, float]:
        loss, metrics = self.module.loss(self.batch(), self.encoder, self.augment)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.module.update_targets()
        self.step += 1
        return {"loss": loss.item(), **{k: float(v) for k, v in metrics.items()}}

    def run(self) -> Path:
        """Train to ``cfg.steps`` and write the backbone; returns ``out``."""
        cfg = self.cfg
        console.print(f"[bold]ssrl pretrain[/] representation={cfg.representation.name} data={cfg.data} "
                      f"({len(self.data):,} transitions) -> {self.out}")
        sums: dict[str, float] = {}
        count, t0, start = 0, time.perf_counter(), time.perf_counter() - self.elapsed
        with Progress(TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console,
                      disable=not cfg.progress) as progress:
            bar = progress.add_task("steps", total=cfg.steps, completed=self.step, loss="-")
            while self.step < cfg.steps:
                for key, value in self.train_step().items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    self.elapsed = now - start
                    row = {"step": self.step, **{k: v / count for k, v in sums.items()},
                           "lr": self.sched.get_last_lr()[0], "steps_per_s": count / (now - t0), "time": self.elapsed}
                    if not all(math.isfinite(v) for v in row.values()):
                        raise FloatingPointError(f"pretraining diverged at step {self.step}: {row}")
                    self.log.write(row | {"frame": self.step})
                    progress.update(bar, completed=self.step, loss=f"{row['loss']:.4f}")
                    sums, count, t0 = {}, 0, now
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        self.backbone().save(self.out)
        console.print(f"backbone: {self.out / 'backbone.safetensors'} (+ backbone.json)")
        return self.out

    def backbone(self) -> Backbone:
        """The current encoder as a backbone with its card."""
        meta, space = self.data.meta, self.augment.output_space()
        provenance = {"data": str(Path(self.cfg.data).resolve()), "tasks": meta["tasks"],
                      "data_policy": meta.get("policy"), "data_transitions": len(self.data),
                      "objective": self.cfg.representation.name,
                      "objective_config": dataclasses.asdict(self.cfg.representation),
                      "steps": self.step, "batch_size": self.cfg.batch_size, "augmentation": self.cfg.augmentation,
                      "seed": self.cfg.seed}
        card = make_card("pixel_encoder", pixel_encoder_args(space.shape, self.cfg.encoder), self.encoder,
                         frame_stack=meta["frame_stack"], size=space.shape[-1], provenance=provenance)
        return Backbone(self.encoder, card)
