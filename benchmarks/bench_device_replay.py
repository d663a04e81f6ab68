"""Device replay vs the numpy ReplayBuffer, and SAC on batched envs vs the single-env Trainer.

    python benchmarks/bench_device_replay.py [--device cpu] [--envs 1 8 32] [--skip-train]

1. Sampling: batches per second of ``DeviceReplay.sample`` (on ``--device``) and of ``ReplayBuffer.sample`` +
   ``to_torch`` (what an agent update does with it), n-step 3, for state (17-d, cheetah-like) and 9x84x84 uint8
   frame stacks; both filled with the same 1000-step episodes; calls alternate between the two.
2. Training: env frames/s of ``ssrl train env=dmc/cheetah-run agent=sac obs=state`` after the seed frames, for
   the single-env Trainer (``num_envs=1``) and ``num_envs=N`` with the default update rule (``num_envs /
   agent.update_every`` updates per vector step: the single-env update-to-data ratio) and with one update per
   vector step (``updates_per_step=1``, FastTD3-style). SAC with ``agent.hidden_dim=256 agent.batch_size=256``.

Prints tables and writes benchmarks/results/device_replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ssrl.config import parse_overrides
from ssrl.data import DeviceReplay, ReplayBuffer, to_torch
from ssrl.experiments.offpolicy import BatchedTrainer, Trainer
from ssrl.runtime.progress import progress_bar

RESULTS = Path(__file__).parent / "results" / "device_replay.json"
EPISODE, ACTION_DIM, N_STEP = 1000, 6, 3
console = Console()


def filled(kind: str, capacity: int, num_envs: int, device: str) -> tuple[DeviceReplay, ReplayBuffer]:
    """Both buffers with ``capacity`` transitions of the same synthetic 1000-step episodes."""
    space = (gym.spaces.Box(-np.inf, np.inf, (17,), np.float32) if kind == "state"
             else gym.spaces.Box(0, 255, (9, 84, 84), np.uint8))
    action_space = gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32)
    dev = DeviceReplay(space, action_space, num_envs, capacity, device=device, n_step=N_STEP, seed=0)
    host = ReplayBuffer(space, action_space, capacity, n_step=N_STEP, seed=0)
    gen = torch.Generator().manual_seed(0)

    def draw(n: int) -> torch.Tensor:
        if kind == "state":
            return torch.randn((n, 17), generator=gen)
        return torch.randint(0, 256, (n, 9, 84, 84), generator=gen, dtype=torch.uint8)

    obs = draw(num_envs)
    for t in range(capacity // num_envs):
        action, reward = torch.rand(num_envs, ACTION_DIM, generator=gen) * 2 - 1, torch.rand(num_envs, generator=gen)
        end = torch.full((num_envs,), (t + 1) % EPISODE == 0)
        nxt = draw(num_envs)
        dev.add(obs.to(device), action.to(device), reward.to(device), torch.zeros_like(end).to(device),
                end.to(device), nxt.to(device) if bool(end.any()) else None)
        obs = nxt
    obs = draw(1)[0].numpy()
    for t in range(capacity):
        if t % EPISODE == 0:
            host.add_first(obs)
        obs = draw(1)[0].numpy()
        host.add(np.zeros(ACTION_DIM, np.float32), 0.5, obs, False, (t + 1) % EPISODE == 0)
    return dev, host


def sample_rates(device: str, batches: list[int], repeats: int) -> list[dict]:
    rows = []
    for kind, capacity in (("state", 100_000), ("pixels", 20_000)):
        dev, host = filled(kind, capacity, 16, device)
        for batch in batches:
            t_dev, t_host = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                out = dev.sample(batch)
                if out["obs"].is_cuda:
                    torch.cuda.synchronize()
                t_dev.append(time.perf_counter() - start)
                start = time.perf_counter()
                out = to_torch(host.sample(batch), device)
                if out["obs"].is_cuda:
                    torch.cuda.synchronize()
                t_host.append(time.perf_counter() - start)
            d, h = float(np.median(t_dev)), float(np.median(t_host))
            rows.append({"obs": kind, "batch": batch, "device_replay_per_s": round(1 / d, 1),
                         "replay_buffer_per_s": round(1 / h, 1), "speedup": round(h / d, 2),
                         "device_replay_bytes_per_transition": round(dev.nbytes / capacity, 1),
                         "replay_buffer_bytes_per_transition": round(host.bytes_per_transition, 1)})
    return rows


AGENT = "env=dmc/cheetah-run agent=sac obs=state agent.hidden_dim=256 agent.batch_size=256 progress=false"


def batched_fps(num_envs: int, updates_per_step: float, steps: int, device: str, run_dir: str) -> float:
    """Env frames/s of ``steps`` vector steps with updates, after one vector step of seed frames."""
    cfg = parse_overrides(f"{AGENT} num_envs={num_envs} updates_per_step={updates_per_step} device={device} "
                          f"seed_frames={4 * num_envs * 2} run_dir={run_dir}".split())
    trainer = BatchedTrainer(cfg)
    trainer.chunk_steps = 4  # seed steps, then the first updates (warm-up)
    trainer.run_unit()
    trainer.chunk_steps = steps
    start, frame = time.perf_counter(), trainer.frame
    trainer.run_unit()
    return (trainer.frame - frame) / (time.perf_counter() - start)


def trainer_fps(device: str, run_dir: str) -> float:
    """Env frames/s of the single-env Trainer over one 1000-frame episode with updates (after a seed episode)."""
    cfg = parse_overrides(f"{AGENT} seed_frames=1000 device={device} run_dir={run_dir}".split())
    trainer = Trainer(cfg)
    with progress_bar(cfg.progress) as progress:
        bar = progress.add_task("frames", total=2000, rate=0.0, status="-")
        trainer.run_unit(progress, bar)
        start, frame = time.perf_counter(), trainer.frame
        trainer.run_unit(progress, bar)
    return (trainer.frame - frame) / (time.perf_counter() - start)


def train_rates(device: str, envs: list[int], updates: int) -> list[dict]:
    """Frames/s per configuration; each batched run does about ``updates`` updates."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append({"runner": "single-env Trainer (num_envs=0)", "num_envs": 1, "updates_per_env_step": 1.0,
                     "frames_per_s": round(trainer_fps(device, f"{tmp}/single"))})
        for n in envs:
            fixed = [(1.0, "updates_per_step=1")] if n > 1 else []
            for ups, label in [(float(n), "default (num_envs / update_every)"), *fixed]:
                steps = max(10, min(250, round(updates / ups)))
                fps = batched_fps(n, ups, steps, device, f"{tmp}/{n}-{ups}")
                rows.append({"runner": f"batched, {label}", "num_envs": n, "updates_per_env_step": round(ups / n, 4),
                             "frames_per_s": round(fps)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--updates", type=int, default=300, help="updates per batched timing run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    result: dict = {"device": args.device, "cpus": os.cpu_count(), "machine": platform.machine(),
                    "torch": torch.__version__, "threads": args.threads, "n_step": N_STEP,
                    "sampling": sample_rates(args.device, args.batches, args.repeats)}
    table = Table(title=f"replay sampling on {args.device}, n-step {N_STEP} (batches/s, median of {args.repeats})")
    for column in ("obs", "batch", "DeviceReplay", "ReplayBuffer + to_torch", "speed-up", "bytes/transition (dev/host)"):
        table.add_column(column, justify="right")
    for r in result["sampling"]:
        table.add_row(r["obs"], str(r["batch"]), f"{r['device_replay_per_s']:,.0f}", f"{r['replay_buffer_per_s']:,.0f}",
                      f"{r['speedup']:.1f}x", f"{r['device_replay_bytes_per_transition']:,.0f} / "
                      f"{r['replay_buffer_bytes_per_transition']:,.0f}")
    console.print(table)

    if not args.skip_train:
        result["training"] = train_rates(args.device, args.envs, args.updates)
        base = result["training"][0]["frames_per_s"]
        table = Table(title=f"SAC on dmc/cheetah-run, obs=state, {args.device} (env frames/s after seeding)")
        for column in ("runner", "num_envs", "updates per env step", "frames/s", "x single-env"):
            table.add_column(column, justify="left" if column == "runner" else "right")
        for r in result["training"]:
            table.add_row(r["runner"], str(r["num_envs"]), f"{r['updates_per_env_step']:g}", f"{r['frames_per_s']:,}",
                          f"{r['frames_per_s'] / base:.1f}")
        console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
