"""Offline pretraining of a pixel encoder with any representation module: ``ssrl pretrain``.

``Pretrainer(cfg).run()`` samples batches from a dataset exactly as the agent samples replay (transitions, or
sequences of ``sequence_length`` steps), steps AdamW with linear warmup then cosine decay on the module's loss,
logs ``pretrain.csv``, checkpoints to ``checkpoint.pt`` (rerunning the same command resumes exactly), and writes
the encoder as a backbone (``backbone.safetensors`` + ``backbone.json``) into ``out``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssrl import config as config_lib
from ssrl.config import CURLConfig, EncoderConfig, GuardConfig
from ssrl.data import Replay, to_torch
from ssrl.data.dataset import Dataset, pixel_key, read_meta
from ssrl.errors import ConfigError
from ssrl.experiments.loop import Counters, Run
from ssrl.nn.augment import Augment
from ssrl.nn.backbone import Backbone, make_card, pixel_encoder_args
from ssrl.nn.encoders import PixelEncoder
from ssrl.representations import Representation, make_representation
from ssrl.runtime import meta, rundir
from ssrl.runtime.checkpoint import read_checkpoint
from ssrl.runtime.guard import Guard
from ssrl.runtime.logger import Logger
from ssrl.runtime.progress import console
from ssrl.runtime.seeding import start_process


@dataclass
class PretrainConfig:
    """One pretraining run. ``representation.lr`` is the peak learning rate."""

    data: str = ""  # the dataset directory (ssrl collect / ssrl data export)
    out: str = ""  # the backbone directory to write (backbone.safetensors + its card)
    steps: int = 10_000  # gradient steps
    batch_size: int = 128  # samples per gradient step
    weight_decay: float = 0.01  # AdamW weight decay
    warmup: int = -1  # linear warmup steps, then cosine decay to 0 at `steps`; -1: 5% of steps, at most 500
    augmentation: str = "shift"  # "shift" or "none" (crops would change the backbone's input size)
    seed: int = 0  # seeds the networks and sampling
    log_every: int = -1  # steps per logged row (and progress update); -1: 2% of steps, at most 100
    checkpoint_every: int = -1  # steps between checkpoints; -1: 10% of steps, at most 1000
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    progress: bool = True  # show the progress bar
    restart: bool = False  # move an existing run in `out` aside (to <out>.old-<time>) and start over
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # the backbone to pretrain
    representation: Any = field(default_factory=CURLConfig)  # the self-supervised objective
    guard: GuardConfig = field(default_factory=GuardConfig)  # divergence checks (docs/safety.md)


# Interval defaults that fit any budget: (fraction of steps, at most).
SCHEDULE = {"log_every": (0.02, 100), "checkpoint_every": (0.1, 1000)}


def parse(args: list[str]) -> PretrainConfig:
    """A validated :class:`PretrainConfig` from ``key=value`` strings."""
    cfg = config_lib.apply_overrides(PretrainConfig(), args)
    if not cfg.data or not cfg.out:
        raise ConfigError("ssrl pretrain needs data=<dataset dir> and out=<backbone dir>")
    if cfg.representation.name == "none":
        names = [name for name in config_lib.REPRESENTATIONS if name != "none"]
        raise ConfigError(f"representation=none: choose one of {', '.join(names)}")
    for key in ("steps", "batch_size", "log_every", "checkpoint_every"):
        if getattr(cfg, key) <= 0 and not (key in SCHEDULE and getattr(cfg, key) == -1):
            default = " (or -1, the default: derived from steps)" if key in SCHEDULE else ""
            raise ConfigError(f"{key}={getattr(cfg, key)}: must be positive{default}")
    for key, (fraction, most) in SCHEDULE.items():  # derived once, here; the config then holds the numbers
        if getattr(cfg, key) == -1:
            setattr(cfg, key, min(most, max(1, int(cfg.steps * fraction))))
    if cfg.warmup != -1 and not 0 <= cfg.warmup < cfg.steps:
        raise ConfigError(f"warmup={cfg.warmup}: must be in [0, steps={cfg.steps}) (or -1, the default: "
                          f"5% of steps, at most 500)")
    config_lib.check_ranges(cfg)
    if cfg.augmentation not in ("shift", "none"):
        raise ConfigError(f"augmentation={cfg.augmentation!r}: choose shift or none")
    if cfg.encoder.pretrained:
        raise ConfigError("encoder.pretrained: ssrl pretrain starts from a fresh encoder")
    return cfg


def warmup_steps(cfg: PretrainConfig) -> int:
    """``warmup``, or by default 5% of ``steps`` (at most 500): the schedule fits any budget."""
    return cfg.warmup if cfg.warmup >= 0 else min(500, cfg.steps // 20)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def representation_batch(module: Representation, replay: Replay, batch_size: int, device: torch.device
                         ) -> dict[str, Any]:
    """A batch for ``module``: transitions, or sequences of its ``sequence_length`` steps."""
    k = module.sequence_length
    return to_torch(replay.sample_sequences(batch_size, k) if k > 0 else replay.sample(batch_size), device)


def pretrain_step(module: Representation, encoder: nn.Module, augment: nn.Module, replay: Replay,
                  optimizer: torch.optim.Optimizer, batch_size: int, device: torch.device) -> dict[str, float]:
    """One step of ``module``'s loss alone on a batch from ``replay`` (``ssrl pretrain``'s step, and the probes');
    returns the loss and the module's metrics."""
    metrics = module.step(representation_batch(module, replay, batch_size, device), encoder, augment, optimizer, 1.0)
    return {key.removeprefix("repr_"): float(value) for key, value in metrics.items()}


@dataclass
class PretrainCounters(Counters):
    step: int = 0  # gradient steps


class Pretrainer(Run):
    """Holds one pretraining run; ``run()`` trains (or resumes) and writes the backbone. A unit is
    ``log_every`` steps (one row of ``pretrain.csv``)."""

    namespace, rate_key, unit, evaluates = "pretrain", "steps_per_s", "steps", False

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        self.run_dir = self.out = Path(cfg.out)
        rundir.check_path(self.out, "out")
        self.device = start_process(cfg.seed, cfg.threads, cfg.device)
        self.data = Dataset(cfg.data, pixel_key(read_meta(cfg.data)), seed=cfg.seed)
        space = self.data.observation_space
        self.augment = Augment(cfg.augmentation, space).to(self.device)
        self.encoder = PixelEncoder(self.augment.output_space(), cfg.encoder).to(self.device)
        self.module = make_representation(cfg.representation, self.encoder, space, self.data.action_space)
        self.module.to(self.device)
        if not self.module.trains_encoder:
            raise ConfigError(f"representation.trains_encoder=false: {cfg.representation.name} would not train the "
                              "encoder, so there is nothing to pretrain")
        params = self.module.trainable_parameters(self.encoder)  # trains_encoder is true here
        self.opt = torch.optim.AdamW(params, lr=cfg.representation.lr, weight_decay=cfg.weight_decay)
        warmup = warmup_steps(cfg)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, warmup, cfg.steps))
        self.guard = Guard(cfg.guard, self.device, "pretrain", unit="step")
        self.counters = PretrainCounters(next_checkpoint=cfg.checkpoint_every)
        self.claim_run_dir(cfg.restart, "out")
        with self.releasing_on_error():
            stored = read_checkpoint(self.out, cfg)
            if stored is not None:
                self._restore(stored)
            meta.start(self.out, dataclasses.asdict(cfg), self.step)
            self.logger = Logger(self.out, namespaces=("pretrain",))
            self.logger.csv["pretrain"].truncate_after(self.step)
            self.begin(fresh=stored is None)

    # ----------------------------------------------------------------------------------------- state
    @property
    def step(self) -> int:
        return self.counters.step

    @property
    def frame(self) -> int:
        return self.counters.step

    @property
    def budget(self) -> int:
        return self.cfg.steps

    def _restore(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.module.load_state_dict(state["module"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.data.load_state_dict(state["data"])
        torch.set_rng_state(state["torch_rng"])
        every = self.cfg.checkpoint_every
        self.counters = PretrainCounters(step=state["step"], elapsed=state["elapsed"],
                                         next_checkpoint=(state["step"] // every + 1) * every)
        console.print(f"[bold]resumed[/] {self.out} at step {self.step:,}")

    def checkpoint_state(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.cfg), "step": self.step, "elapsed": self.counters.elapsed,
                "encoder": self.encoder.state_dict(), "module": self.module.state_dict(),
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "data": self.data.state_dict(),
                "torch_rng": torch.get_rng_state()}

    # -------------------------------------------------------------------------------------- training
    def next_commands(self) -> list[tuple[str, str]]:
        return [(f"ssrl train env=TASK encoder=pretrained:{self.out} encoder.freeze=true",
                 "RL on the frozen backbone (size= and frame_stack= as its dataset's)"),
                (f"ssrl transfer backbone={self.out} tasks=TASK", "behaviour cloning on its features (MetaWorld)")]

    def describe(self) -> str:
        cfg = self.cfg
        return (f"[bold]ssrl pretrain[/] representation={cfg.representation.name} data={cfg.data} "
                f"({len(self.data):,} transitions)")

    def train_step(self) -> dict[str, float]:
        metrics = pretrain_step(self.module, self.encoder, self.augment, self.data, self.opt, self.cfg.batch_size,
                                self.device)
        self.guard.metrics(metrics, self.step)
        self.sched.step()
        self.counters.step += 1
        return metrics

    def run_unit(self, progress: Any = None, bar: Any = None) -> dict[str, Any]:
        """Steps up to the next multiple of ``log_every`` (or the end); returns their mean metrics."""
        sums: dict[str, float] = {}
        count = 0
        while count == 0 or self.step % self.cfg.log_every and self.step < self.cfg.steps:
            for key, value in self.train_step().items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
        return {"step": self.step, **{k: v / count for k, v in sums.items()}, "lr": self.sched.get_last_lr()[0],
                "frame": self.step}

    def status(self, row: dict[str, Any]) -> str:
        return f"loss {row['loss']:.4f}"

    def finish(self) -> None:
        self.backbone().save(self.out)
        console.print(f"backbone: {self.out / 'backbone.safetensors'} (+ backbone.json)")

    def run(self) -> Path:
        """Train to ``cfg.steps`` and write the backbone; returns ``out``."""
        self.train()
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
