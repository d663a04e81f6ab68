"""Representation modules: update cost relative to ``representation=none`` and a linear physics probe.

    python benchmarks/bench_representations.py [--batch 64] [--size 84] [--probe-updates 1500]

1. Update cost: one SAC ``update()`` (critic, actor, representation, targets) on the same batch size and
   pixel size for every module, timed round-robin in one process (median of ``--rounds``), as a ratio to
   ``none``.
2. Probe: random-policy frames of ``--task``; each module's objective alone trains the encoder for
   ``--probe-updates`` updates from the same initialisation; a ridge probe from frozen features to the state
   (positions, angles as cos/sin, velocities) is scored by episode-wise ``--folds``-fold cross-validation
   (R^2 of the out-of-fold predictions of every frame, averaged over state dims), next to the same probe on
   the randomly initialised encoder; both averaged over ``--seeds`` initialisations.
Prints tables and writes benchmarks/results/representations.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ssrl.agents import make_agent
from ssrl.config import parse_overrides
from ssrl.data import ReplayBuffer
from ssrl.eval.probe import collect, pretrain, probe_r2

RESULTS = Path(__file__).parent / "results" / "representations.json"
MODULES = ["none", "curl", "spr", "masked", "world_model"]


def random_replay(space: gym.spaces.Box, frame_stack: int, episodes: int = 4, length: int = 100) -> ReplayBuffer:
    """A buffer of random uint8 frames (update cost does not depend on the pixels)."""
    actions = gym.spaces.Box(-1, 1, (6,), np.float32)
    replay = ReplayBuffer(space, actions, episodes * (length + 1), frame_stack=frame_stack, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        replay.add_first(rng.integers(0, 256, space.shape, dtype=np.uint8))
        for t in range(length):
            replay.add(rng.uniform(-1, 1, 6).astype(np.float32), float(rng.normal()),
                       rng.integers(0, 256, space.shape, dtype=np.uint8), False, t == length - 1)
    return replay


def update_costs(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per SAC update for each module."""
    space = gym.spaces.Box(0, 255, (9, args.size, args.size), np.uint8)
    replay = random_replay(space, 3)
    agents = {}
    for name in MODULES:
        cfg = parse_overrides(["agent=sac", f"agent.batch_size={args.batch}", f"representation={name}",
                               f"encoder.num_filters={args.filters}"])
        torch.manual_seed(0)
        agents[name] = make_agent(cfg, space, gym.spaces.Box(-1, 1, (6,), np.float32), torch.device("cpu"))
        agents[name].update(replay, 0)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in MODULES}
    for _ in range(args.rounds):
        for name, agent in agents.items():
            start = time.perf_counter()
            for _ in range(args.updates):
                agent.update(replay, 0)
            times[name].append((time.perf_counter() - start) / args.updates)
    return {name: statistics.median(t) for name, t in times.items()}


def probe_table(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per module: probe R^2 at init and after pretraining, averaged over ``--seeds`` (initialisation and batch
    order; the random-init baseline uses the same initialisations)."""
    data = collect(args.task, args.episodes, size=args.probe_size, seed=0)
    rows = {}
    for name in MODULES[1:]:
        cfg = parse_overrides(["agent=sac", "agent.hidden_dim=32", "agent.batch_size=32", "encoder.num_filters=8",
                               "encoder.num_layers=2", f"representation={name}"])
        runs = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            data.replay.seed(seed)
            agent = make_agent(cfg, data.observation_space, data.action_space, torch.device("cpu"))
            random_r2 = probe_r2(agent.encoder, agent.augment, data, folds=args.folds)
            start = time.perf_counter()
            losses = pretrain(agent, data.replay, args.probe_updates)
            runs.append({"random_r2": random_r2, "trained_r2": probe_r2(agent.encoder, agent.augment, data,
                                                                        folds=args.folds),
                         "loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:])),
                         "seconds": time.perf_counter() - start})
        rows[name] = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
        rows[name]["gain_min"] = min(run["trained_r2"] - run["random_r2"] for run in runs)
    rows["frames"] = {"count": len(data.obs)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--updates", type=int, default=3, help="updates per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", default="dmc/cartpole-swingup")
    parser.add_argument("--episodes", type=int, default=10, help="random-policy episodes")
    parser.add_argument("--folds", type=int, default=5, help="episode-wise cross-validation folds of the probe")
    parser.add_argument("--seeds", type=int, default=1, help="pretraining runs per module (init and batch order)")
    parser.add_argument("--probe-size", type=int, default=32)
    parser.add_argument("--probe-updates", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()

    costs = update_costs(args)
    table = Table(title=f"SAC update cost, batch {args.batch}, {args.size}x{args.size} pixels, "
                        f"{args.filters} filters, {torch.get_num_threads()} threads (median of {args.rounds})")
    for column in ("representation", "s / update", "x none"):
        table.add_column(column, justify="left" if column == "representation" else "right")
    for name, seconds in costs.items():
        table.add_row(name, f"{seconds:.3f}", f"{seconds / costs['none']:.2f}")
    console.print(table)

    probe = probe_table(args)
    frames = probe.pop("frames")["count"]
    table = Table(title=f"Linear probe R^2 ({args.folds}-fold episode-wise CV), {args.task}, {frames} random-policy "
                        f"frames {args.probe_size}x{args.probe_size}, {args.probe_updates} pretraining updates, "
                        f"mean of {args.seeds} seed(s)")
    for column in ("representation", "random init", "pretrained", "gain", "min gain", "loss first -> last",
                   "time s"):
        table.add_column(column, justify="left" if column == "representation" else "right")
    for name, row in probe.items():
        table.add_row(name, f"{row['random_r2']:.3f}", f"{row['trained_r2']:.3f}",
                      f"{row['trained_r2'] - row['random_r2']:+.3f}", f"{row['gain_min']:+.3f}",
                      f"{row['loss_first']:.3f} -> {row['loss_last']:.3f}", f"{row['seconds']:.0f}")
    console.print(table)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "args": vars(args), "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "update_seconds": {k: round(v, 4) for k, v in costs.items()},
        "update_ratio_vs_none": {k: round(v / costs["none"], 2) for k, v in costs.items()},
        "probe": {k: {m: round(v, 4) for m, v in row.items()} for k, row in probe.items()}, "probe_frames": frames,
    }, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
