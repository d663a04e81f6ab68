"""Pixel env steps/s of `make_batched(obs="pixels")` vs Gymnasium vector envs of `ssrl.envs.make(obs="pixels")`.

    python benchmarks/bench_batched_pixels.py [--task dmc/cheetah-run] [--size 84] [--seconds 3]

One env step = one agent step of one env: `--action-repeat` control steps (default 1, so rendering
dominates), one rendered frame, stacked 3 deep. Rows: the batched CPU backend with its OpenGL renderers
in process (render_workers=0) and in 2 spawn workers, at several num_envs; Gymnasium SyncVectorEnv and
AsyncVectorEnv (spawn) of the single pixel env. All rows are measured in this one run, with the same task,
size and look, in `--rounds` round-robin passes keeping each row's best (the machine is shared, so load
drifts during a run); ratios are against the fastest Gymnasium vector env. Prints a table and writes
benchmarks/results/batched_pixels.json.
"""

from __future__ import annotations

import ssrl.envs  # first: it picks the headless GL backend (MUJOCO_GL), which mujoco reads at import

# isort: split
import argparse
import functools
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np
import torch
from bench_batched import rate
from rich.console import Console
from rich.table import Table

from ssrl.envs.batched import make_batched

RESULTS = Path(__file__).parent / "results" / "batched_pixels.json"


def batched(task: str, envs: int, seconds: float, size: int, action_repeat: int, workers: int) -> float:
    env = make_batched(task, envs, obs="pixels", size=size, action_repeat=action_repeat, seed=0,
                       render_workers=workers)  # fmt: skip
    env.reset(seed=0)
    actions = torch.rand(envs, *env.single_action_space.shape) * 2 - 1
    try:
        return rate(lambda: env.step(actions), envs, seconds)
    finally:
        env.close()


def gym_vector(task: str, envs: int, seconds: float, size: int, action_repeat: int, kind: str) -> float:
    env = ssrl.envs.make_vec(task, envs, vectorization=kind, obs="pixels", size=size, action_repeat=action_repeat,
                             seed=0)  # fmt: skip
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, env.action_space.shape).astype(np.float32)
    try:
        return rate(lambda: env.step(actions), envs, seconds)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="dmc/cheetah-run")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--action-repeat", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over all rows; each row keeps its best")
    parser.add_argument("--num-envs", default="1,4,16,64", help="batched num_envs, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)  # physics and renderers own the cores; torch only stacks small tensors
    task, s, size, repeat = args.task, args.seconds, args.size, args.action_repeat

    rows: dict[str, Callable[[], float]] = {}
    for workers in (0, 2):
        for n in (int(n) for n in args.num_envs.split(",")):
            rows[f"batched cpu, render_workers={workers}, {n} envs"] = functools.partial(
                batched, task, n, s, size, repeat, workers)  # fmt: skip
    for n in (1, 8):
        rows[f"gymnasium SyncVectorEnv, {n} envs"] = functools.partial(gym_vector, task, n, s, size, repeat, "sync")
    for n in (2, 8):
        rows[f"gymnasium AsyncVectorEnv (spawn), {n} envs"] = functools.partial(
            gym_vector, task, n, s, size, repeat, "async")  # fmt: skip

    console = Console(width=120)
    results: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name, measure in rows.items():
            value = measure()
            results[name] = max(results.get(name, 0.0), value)
            console.print(f"round {round_ + 1}, {name}: {value:,.0f}")
    baseline_name = max((k for k in results if k.startswith("gymnasium")), key=results.__getitem__)
    baseline = results[baseline_name]

    table = Table(title=f"{task} pixels {size}x{size}, frame stack 3, action repeat {repeat}: env steps/s, "
                        f"{os.cpu_count()} CPUs")  # fmt: skip
    for column in ("runner", "env steps/s", f"x {baseline_name}"):
        table.add_column(column, justify="left" if column == "runner" else "right")
    for name, value in results.items():
        table.add_row(name, f"{value:,.0f}", f"{value / baseline:.2f}")
    console.print(table)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "task": task, "size": size, "frame_stack": 3, "action_repeat": repeat, "seconds_per_row": s, "rounds": args.rounds,
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "machine": platform.machine(),
        "mujoco": mujoco.__version__, "torch": torch.__version__, "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
        "baseline": baseline_name,
        "env_steps_per_s": {name: round(value, 1) for name, value in results.items()},
        "ratio_to_baseline": {name: round(value / baseline, 2) for name, value in results.items()},
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
