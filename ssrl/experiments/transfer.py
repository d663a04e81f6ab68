"""Behaviour cloning from pixels with a backbone: ``ssrl transfer`` (the R3M/VIP protocol, small).

For each task, scripted-expert demonstrations are recorded once (a dataset under ``demos_dir``, by default
``out/demos``; the first ``n`` episodes serve ``demos=n``). For each demo count and seed, a policy = backbone +
small MLP head (features and the robot's proprioception -> action) is trained with MSE on expert actions, then
evaluated for ``rollouts`` episodes on held-out initial states; an episode succeeds when the task reports
success at any step (it then ends).

``backbone`` is a path (``ssrl.load_backbone``; frozen unless ``freeze=false``, then fine-tuned at
``lr * encoder_lr_scale``), ``scratch`` (a fresh encoder trained end to end at ``lr``) or ``random`` (a fresh
encoder, frozen: the control that shows what pretraining adds).

``readout`` is what the head reads: ``features`` (the backbone's own feature vector), ``keypoints`` (a spatial
softmax of the backbone's last conv maps: a 1x1 conv to 32 maps and each map's expected position) or
``projection`` (a fresh Linear-LayerNorm-tanh of the flattened maps, the pixel encoder's own head shape); the
last two train with the head, so a frozen backbone freezes only the conv trunk.

``out`` is one process's at a time (locked). ``out/results.json`` keeps every row any run wrote there, each with
the settings that produced it; a row is written as soon as its seeds are done, and a rerun with the same settings
keeps it instead of training again, so an interrupted run resumes and runs of other backbones add their rows.
"""

from __future__ import annotations

import fcntl
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from ssrl import config as config_lib
from ssrl import files
from ssrl.config import EncoderConfig
from ssrl.data import to_torch
from ssrl.data.dataset import Dataset, episode_arrays, episode_files, read_meta, subset
from ssrl.errors import ConfigError
from ssrl.experiments.collect import record
from ssrl.nn.augment import Augment
from ssrl.nn.backbone import Backbone, load_backbone, make_card, pixel_encoder_args
from ssrl.nn.encoders import PixelEncoder, feature_head
from ssrl.nn.heads import SpatialSoftmax
from ssrl.nn.utils import mlp
from ssrl.runtime import rundir

console = Console()
SUITES = {"metaworld": "mw/"}
PROPRIO_DIMS = {"metaworld": 4}  # hand xyz + gripper opening: the first entries of MetaWorld's state
EVAL_SEED_OFFSET = 100_000  # evaluation initial states never coincide with demonstration ones


@dataclass
class TransferConfig:
    """Behaviour cloning on top of a backbone: success rates over tasks, demo counts and seeds."""

    backbone: str = "scratch"  # PATH | scratch | random
    suite: str = "metaworld"  # where the tasks and their scripted experts come from
    tasks: str = "reach-v3"  # comma-separated
    demos: str = "10"  # comma-separated demonstration counts
    seeds: int = 3  # BC seeds per task and demo count
    rollouts: int = 50  # evaluation rollouts per seed
    freeze: bool = True  # PATH backbones: frozen (true) or fine-tuned (false)
    encoder_lr_scale: float = 0.1  # fine-tuned PATH backbones train at lr * encoder_lr_scale
    steps: int = 2000  # BC gradient steps
    batch_size: int = 64  # BC batch size
    lr: float = 1e-3  # learning rate of the BC head
    hidden_dim: int = 256  # width of the BC head
    size: int = 84  # side of the rendered views
    frame_stack: int = 1  # stacked frames per observation
    horizon: int = 150  # max steps per episode (demos and rollouts)
    proprio: bool = True  # feed the robot's proprioceptive state to the head as well
    augmentation: str = "shift"  # "shift" or "none"
    feature_views: int = 8  # frozen backbones: cached views per demo frame (the eval view + augmentations)
    readout: str = "features"  # head input: features, keypoints or projection (of the conv maps; module docstring)
    out: str = "results/transfer"  # results.json and results.md (every run's rows, kept) go here
    demos_dir: str = ""  # where recorded demonstrations live (default out/demos; several outs may share one)
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    progress: bool = True  # show the progress bar

    def task_list(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]

    def demo_counts(self) -> list[int]:
        try:
            return [int(n) for n in self.demos.split(",") if n]
        except ValueError:
            raise ConfigError(f"demos={self.demos!r}: expected comma-separated integers") from None

    def label(self) -> str:
        readout = "" if self.readout == "features" else f" + {self.readout}"
        if self.backbone in ("scratch", "random"):
            return self.backbone + readout
        if self.freeze:
            return f"{Path(self.backbone).name}{readout} (frozen)"
        scale = "" if self.encoder_lr_scale == 0.1 else f", encoder lr x{self.encoder_lr_scale:g}"
        return f"{Path(self.backbone).name}{readout} (fine-tuned{scale})"


def parse(args: list[str]) -> TransferConfig:
    cfg = config_lib.apply_overrides(TransferConfig(), args)
    if cfg.suite not in SUITES:
        raise ConfigError(f"suite={cfg.suite!r}: choose one of {', '.join(SUITES)}")
    if not cfg.task_list() or not cfg.demo_counts() or min(cfg.demo_counts()) < 1:
        raise ConfigError("tasks= and demos= need at least one task and positive demo counts")
    for key in ("seeds", "rollouts", "steps", "batch_size", "size", "frame_stack", "horizon", "feature_views"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key}={getattr(cfg, key)}: must be positive")
    if cfg.augmentation not in ("shift", "none"):
        raise ConfigError(f"augmentation={cfg.augmentation!r}: choose shift or none")
    if cfg.readout not in READOUTS:
        raise ConfigError(f"readout={cfg.readout!r}: choose one of {', '.join(READOUTS)}")
    if cfg.backbone not in ("scratch", "random"):  # fail before recording demonstrations
        load_backbone(cfg.backbone, frame_stack=cfg.frame_stack, size=cfg.size)
    rundir.check_path(Path(cfg.out), "out")
    return cfg


# Keys that do not change a row's outcome: a row is reused when everything else (and its task and demo count) match.
NOT_SETTINGS = ("tasks", "demos", "out", "demos_dir", "device", "threads", "progress")


def _outcome_keys(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in NOT_SETTINGS}


def settings(cfg: TransferConfig) -> dict[str, Any]:
    """What a row's outcome depends on besides its task and demo count: the config and, for a backbone file, the
    hash of its weights (a backbone retrained at the same path makes new rows)."""
    values = _outcome_keys(asdict(cfg))
    if cfg.readout == "features":
        del values["readout"]  # rows written before readouts existed read their backbone's features
    if cfg.backbone not in ("scratch", "random"):
        card = load_backbone(cfg.backbone, frame_stack=cfg.frame_stack, size=cfg.size).card
        values["backbone_weights"] = card.get("weights_sha256", "")
    return values


# ----------------------------------------------------------------------------------------------- envs
class EndOnSuccess(gym.Wrapper):
    """Ends the episode (``terminated``) at the first step whose ``info["success"]`` is true."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated or bool(info.get("success", False)), truncated, info


def make_task_env(cfg: TransferConfig, task: str) -> gym.Env:
    from ssrl.envs import make

    env = make(SUITES[cfg.suite] + task, obs="pixels+state", size=cfg.size, frame_stack=cfg.frame_stack)
    return EndOnSuccess(gym.wrappers.TimeLimit(env, cfg.horizon))


def demonstrations(cfg: TransferConfig, task: str, n: int) -> Path:
    """A dataset of the first ``n`` scripted-expert episodes of ``task`` (recorded once, then reused). Processes
    sharing ``demos_dir`` take turns: one records, the others wait for it and reuse its episodes."""
    root = Path(cfg.demos_dir or Path(cfg.out) / "demos") / f"{task}-{cfg.size}px-fs{cfg.frame_stack}-h{cfg.horizon}"
    full = root / "all"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as lock:  # closing releases the flock
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = len(episode_files(full)) if (full / "dataset.json").exists() else 0
        if have < max(cfg.demo_counts()):
            if full.exists():  # the episodes are deterministic: the longer recording starts with the same ones
                for path in full.iterdir():
                    path.unlink()
            env = make_task_env(cfg, task)
            base = env.unwrapped
            meta = {"tasks": [SUITES[cfg.suite] + task], "policy": "scripted", "obs": "pixels+state",
                    "size": cfg.size, "render": "fast"}
            try:
                record(env, lambda obs: base.expert_action(), full, episodes=max(cfg.demo_counts()), meta=meta,
                       progress=cfg.progress)
            finally:
                env.close()
        return subset(full, n, root / f"n{n}")


# --------------------------------------------------------------------------------------------- policy
READOUTS = ("features", "keypoints", "projection")


def make_readout(readout: str, backbone: Backbone) -> tuple[nn.Module, int]:
    """The trainable module between the backbone's output and the MLP head, and its output size."""
    if readout == "features":
        return nn.Identity(), backbone.features_dim
    channels, h, w = backbone.maps_shape()
    if readout == "keypoints":
        keypoints = SpatialSoftmax(channels)
        return keypoints, keypoints.out_dim
    dim = backbone.features_dim
    return nn.Sequential(nn.Flatten(), *feature_head(channels * h * w, dim)), dim


class BCPolicy(nn.Module):
    """Backbone output -> readout (+ proprioception) -> MLP -> tanh action; ``augment`` applies to training
    batches."""

    def __init__(self, backbone: Backbone, augment: Augment, proprio_dim: int, action_dim: int,
                 hidden_dim: int, readout: str = "features") -> None:
        super().__init__()
        self.backbone, self.augment, self.proprio_dim = backbone, augment, proprio_dim
        self.reads_maps = readout != "features"
        self.readout, dim = make_readout(readout, backbone)
        self.head = nn.Sequential(mlp(dim + proprio_dim, hidden_dim, action_dim), nn.Tanh())

    def forward(self, pixels: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Actions for (already augmented) pixels and raw states."""
        return self.from_features(self.encode(pixels), state)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the readout reads: the backbone's features or its conv maps (a frozen backbone's cache)."""
        return self.backbone.maps(pixels) if self.reads_maps else self.backbone(pixels)

    def from_features(self, features: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Actions for :meth:`encode`'s output and raw states."""
        features = self.readout(features)
        if self.proprio_dim:
            features = torch.cat([features, state[:, : self.proprio_dim].float()], dim=-1)
        return self.head(features)

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """MSE to the expert's (clipped) actions on an augmented batch."""
        action = self(self.augment(batch["obs"]["pixels"]), batch["obs"]["state"])
        return F.mse_loss(action, batch["action"].clamp(-1, 1))

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], device: torch.device) -> np.ndarray:
        batch = to_torch({k: np.asarray(v)[None] for k, v in obs.items()}, device)
        return self(self.augment.eval_view(batch["pixels"]), batch["state"])[0].cpu().numpy()


def make_backbone(cfg: TransferConfig, space: gym.spaces.Box) -> Backbone:
    """The backbone a run starts from (fresh for ``scratch``/``random``, loaded otherwise)."""
    if cfg.backbone in ("scratch", "random"):
        enc_cfg = EncoderConfig()
        net = PixelEncoder(space, enc_cfg)
        card = make_card("pixel_encoder", pixel_encoder_args(space.shape, enc_cfg), net, frame_stack=cfg.frame_stack,
                         size=cfg.size, provenance={"objective": cfg.backbone})
        backbone = Backbone(net, card)
        return backbone.freeze() if cfg.backbone == "random" else backbone
    backbone = load_backbone(cfg.backbone, frame_stack=cfg.frame_stack, size=cfg.size)
    backbone.check_input(space, f"backbone={cfg.backbone}")
    return backbone.freeze() if cfg.freeze else backbone


def train_bc(cfg: TransferConfig, demos: Path, seed: int, device: torch.device) -> tuple[BCPolicy, list[float]]:
    """Fit a policy to the demonstrations; returns it and the loss averaged over each tenth of training. A frozen
    backbone encodes every demonstration frame once, in ``cfg.feature_views`` views (the eval view and random
    augmentations), and the head trains on those cached features; other backbones train end to end."""
    torch.manual_seed(seed)
    data = Dataset(demos, seed=seed)
    pixels_space = data.observation_space["pixels"]
    backbone = make_backbone(cfg, pixels_space)
    policy = BCPolicy(backbone, Augment(cfg.augmentation, pixels_space), PROPRIO_DIMS[cfg.suite] if cfg.proprio else 0,
                      data.action_space.shape[0], cfg.hidden_dim, cfg.readout).to(device)
    groups = [{"params": [*policy.readout.parameters(), *policy.head.parameters()], "lr": cfg.lr}]
    if not backbone.frozen:
        scale = 1.0 if cfg.backbone == "scratch" else cfg.encoder_lr_scale
        groups.append({"params": backbone.parameters(), "lr": cfg.lr * scale})
    opt = torch.optim.Adam(groups)
    if backbone.frozen:
        loss_fn = cached_loss(policy, demos, cfg.feature_views, seed, cfg.batch_size, device)
    else:
        def loss_fn() -> torch.Tensor:
            return policy.loss(to_torch(data.sample(cfg.batch_size), device))
    losses, chunk = [], []
    policy.train()
    for step in range(cfg.steps):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        chunk.append(loss.item())
        if len(chunk) == max(cfg.steps // 10, 1) or step == cfg.steps - 1:
            losses.append(float(np.mean(chunk)))
            chunk = []
    policy.eval()
    return policy, losses


def demo_steps(demos: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels, state and the expert's action of every demonstration step that has an action (an episode's
    last observation has none)."""
    arrays = episode_arrays(demos)
    has_action = np.ones(len(arrays["episode"]), bool)
    has_action[np.flatnonzero(np.diff(arrays["episode"], append=-1))] = False
    return arrays["obs/pixels"][has_action], arrays["obs/state"][has_action], arrays["action"][has_action]


@torch.no_grad()
def encode_views(policy: BCPolicy, pixels: np.ndarray, views: int, device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """``(N, views, ...)`` frozen :meth:`BCPolicy.encode` outputs of ``pixels``: view 0 the eval view, the others
    random augmentations."""
    out = []
    for i in range(0, len(pixels), batch_size):
        x = to_torch(pixels[i : i + batch_size], device)
        out.append(torch.stack([policy.encode(policy.augment.eval_view(x) if v == 0 else policy.augment(x))
                                for v in range(views)], 1))
    return torch.cat(out)


def cached_loss(policy: BCPolicy, demos: Path, views: int, seed: int, batch_size: int, device: torch.device):
    """The BC loss on batches of cached features (every demonstration step equally likely, a random view each)."""
    pixels, state, action = demo_steps(demos)
    features = encode_views(policy, pixels, views, device)
    state, action = to_torch(state, device), to_torch(action, device).clamp(-1, 1)
    generator = torch.Generator().manual_seed(seed)

    def loss() -> torch.Tensor:
        index = torch.randint(0, len(features), (batch_size,), generator=generator)
        view = torch.randint(0, views, (batch_size,), generator=generator)
        return F.mse_loss(policy.from_features(features[index, view], state[index]), action[index])

    return loss


@torch.no_grad()
def success_rate(cfg: TransferConfig, policy: BCPolicy, env: gym.Env, seed: int,
                 device: torch.device) -> list[bool]:
    """Success of ``cfg.rollouts`` episodes of ``env`` (a :func:`make_task_env`) from held-out initial states."""
    results = []
    for i in range(cfg.rollouts):
        obs, _ = env.reset(seed=EVAL_SEED_OFFSET + 1000 * seed + i)
        done, success = False, False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy.act(obs, device))
            success |= bool(info.get("success", False))
            done = terminated or truncated
        results.append(success)
    return results


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run_row(cfg: TransferConfig, task: str, n: int, env: gym.Env, device: torch.device) -> dict[str, Any]:
    """Every seed of one task and demo count, rollouts in ``env``: one row."""
    demos = demonstrations(cfg, task, n)
    outcomes, curves, per_seed, t0 = [], [], [], time.perf_counter()
    for seed in range(cfg.seeds):
        policy, losses = train_bc(cfg, demos, seed, device)
        seed_outcomes = success_rate(cfg, policy, env, seed, device)
        outcomes += seed_outcomes
        per_seed.append(float(np.mean(seed_outcomes)))
        curves.append(losses)
    k = int(sum(outcomes))
    low, high = wilson(k, len(outcomes))
    row = {"backbone": cfg.label(), "task": task, "demos": n, "seeds": cfg.seeds, "rollouts": len(outcomes),
           "successes": k, "success_rate": k / len(outcomes), "ci95": [low, high], "seed_success": per_seed,
           "demo_expert_success": read_meta(demos).get("success_rate"),
           "bc_loss_first": float(np.mean([c[0] for c in curves])),
           "bc_loss_last": float(np.mean([c[-1] for c in curves])), "seconds": time.perf_counter() - t0}
    console.print(f"{row['backbone']:>24} {task:>12} demos={n:<3} success {k}/{len(outcomes)} "
                  f"[{low:.2f}, {high:.2f}]  bc loss {row['bc_loss_first']:.4f} -> {row['bc_loss_last']:.4f}")
    return row


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out/results.json`` (none if absent); a file of an older ssrl (one ``config`` for all its rows)
    gives them that config's settings."""
    path = out / "results.json"
    if not path.exists():
        return []
    try:
        results = json.loads(path.read_text())
        rows = results["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is not a results file of ssrl transfer ({e}); move it away or choose another "
                          "out") from None
    if "config" in results:
        old = _outcome_keys(results["config"])
        rows = [{**row, "settings": row.get("settings", old)} for row in rows]
    return rows


def run(cfg: TransferConfig) -> list[dict[str, Any]]:
    """Train and evaluate every (task, demos, seed) (rows already in ``out/results.json`` with the same settings
    are kept, not redone); returns this config's rows and writes ``results.json`` and ``results.md``, with every
    other row found there, after each row."""
    from ssrl.runtime.seeding import resolve_device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = rundir.Lock(out, "out")
    try:
        files.remove_temporaries(out)
        every, wanted, rows = read_rows(out), settings(cfg), []
        for task in cfg.task_list():
            found = {r["demos"]: r for r in every if (r["task"], r["settings"]) == (task, wanted)}
            todo = [n for n in cfg.demo_counts() if n not in found]
            for n in (n for n in cfg.demo_counts() if n in found):
                console.print(f"{cfg.label():>24} {task:>12} demos={n:<3} kept from {out / 'results.json'}")
            if todo:
                env = make_task_env(cfg, task)  # one env per task serves every rollout
                try:
                    for n in todo:
                        found[n] = {**run_row(cfg, task, n, env, device), "settings": wanted}
                        every.append(found[n])
                        files.write_text(out / "results.json", json.dumps({"rows": every}, indent=2))
                        files.write_text(out / "results.md", markdown(every))
                finally:
                    env.close()
            rows += [found[n] for n in cfg.demo_counts()]
    finally:
        lock.release()
    print_table(rows)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| backbone | task | demos | success (rollouts) | 95% CI | BC loss first -> last |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['task']} | {r['demos']} | {r['success_rate']:.2f} ({r['rollouts']}) | "
                     f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | "
                     f"{r['bc_loss_first']:.4f} -> {r['bc_loss_last']:.4f} |")
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="behaviour cloning success rate")
    for name in ("backbone", "task", "demos", "success", "95% CI", "rollouts"):
        table.add_column(name)
    for r in rows:
        table.add_row(r["backbone"], r["task"], str(r["demos"]), f"{r['success_rate']:.2f}",
                      f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]", str(r["rollouts"]))
    console.print(table)
