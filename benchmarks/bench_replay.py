"""Replay memory and sampling speed: ssrl's frame-once buffer vs a naive buffer that stores obs and next_obs stacks.

    python benchmarks/bench_replay.py [--capacity 20000] [--batch 512]

Both buffers are filled with the same 84x84, frame-stack-3 episodes (1000-step episodes, 6-d actions); bytes per
transition are the preallocated arrays divided by capacity. Sampling times alternate between the two buffers and
report medians. Prints a table and writes benchmarks/results/replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

from ssrl.data import ReplayBuffer

RESULTS = Path(__file__).parent / "results" / "replay.json"
STACK, SIZE, ACTION_DIM, EPISODE = 3, 84, 6, 1000


class NaiveReplay:
    """The reference implementations' layout: obs and next_obs stacks per transition, 1-step only."""

    def __init__(self, capacity: int) -> None:
        shape = (capacity, 3 * STACK, SIZE, SIZE)
        self.obs, self.next_obs = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
        self.action = np.empty((capacity, ACTION_DIM), np.float32)
        self.reward, self.discount = np.empty(capacity, np.float32), np.empty(capacity, np.float32)
        self.capacity, self.size, self.rng = capacity, 0, np.random.default_rng(0)

    def add(self, obs, action, reward, next_obs, discount) -> None:
        i = self.size % self.capacity
        self.obs[i], self.next_obs[i], self.action[i], self.reward[i], self.discount[i] = (
            obs, next_obs, action, reward, discount)
        self.size += 1

    def sample(self, batch: int) -> dict[str, np.ndarray]:
        idx = self.rng.integers(min(self.size, self.capacity), size=batch)
        return {"obs": self.obs[idx], "action": self.action[idx], "reward": self.reward[idx],
                "discount": self.discount[idx], "next_obs": self.next_obs[idx]}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.obs, self.next_obs, self.action, self.reward, self.discount))


def fill(ours: ReplayBuffer, naive: NaiveReplay, steps: int) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (64, 3, SIZE, SIZE), np.uint8)  # a pool of frames; content does not matter
    t = 0
    while t < steps:
        stack = np.concatenate([frames[t % 64]] * STACK)
        ours.add_first(stack)
        for j in range(min(EPISODE, steps - t)):
            t += 1
            nxt = np.concatenate([stack[3:], frames[t % 64]])
            action, reward = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32), float(rng.random())
            last = j == EPISODE - 1
            ours.add(action, reward, nxt, False, last)
            naive.add(stack, action, reward, nxt, 0.99)
            stack = nxt


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    obs_space = gym.spaces.Box(0, 255, (3 * STACK, SIZE, SIZE), np.uint8)
    ours = ReplayBuffer(obs_space, gym.spaces.Box(-1, 1, (ACTION_DIM,)), args.capacity, frame_stack=STACK, n_step=3)
    naive = NaiveReplay(args.capacity)
    fill(ours, naive, args.capacity)
    ours.sample(8), naive.sample(8)  # touch pages

    t_ours, t_naive = [], []
    for _ in range(args.repeats):  # alternate so both see the same machine load
        t_ours.append(median_seconds(lambda: ours.sample(args.batch), 1))
        t_naive.append(median_seconds(lambda: naive.sample(args.batch), 1))
    per_ours, per_naive = ours.nbytes / ours.capacity, naive.nbytes / naive.capacity
    result = {
        "capacity": args.capacity, "batch": args.batch, "obs": [3 * STACK, SIZE, SIZE], "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "bytes_per_transition": {"ssrl": round(per_ours, 1), "naive obs+next_obs": round(per_naive, 1)},
        "memory_ratio": round(per_naive / per_ours, 2),
        "gb_at_1M_transitions": {"ssrl": round(per_ours * 1e6 / 1e9, 1), "naive obs+next_obs": round(per_naive * 1e6 / 1e9, 1)},
        "sample_ms": {"ssrl (n-step 3, stacks rebuilt)": round(1e3 * float(np.median(t_ours)), 2),
                      "naive (1-step)": round(1e3 * float(np.median(t_naive)), 2)},
    }

    table = Table(title=f"replay, {3 * STACK}x{SIZE}x{SIZE} uint8 observations, batch {args.batch}")
    for column in ("buffer", "bytes/transition", "GB at 1M", f"sample {args.batch} (ms)"):
        table.add_column(column, justify="left" if column == "buffer" else "right")
    for (name, b), ms in zip(result["bytes_per_transition"].items(), result["sample_ms"].values()):
        table.add_row(name, f"{b:,.0f}", f"{b * 1e6 / 1e9:.1f}", f"{ms:.2f}")
    console = Console()
    console.print(table)
    console.print(f"naive / ssrl memory = {result['memory_ratio']:.2f}x (target >= 6x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
