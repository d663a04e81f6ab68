"""Env steps/s of batched dm_control tasks vs Gymnasium vector envs and a Python loop of mj_step.

    python benchmarks/bench_batched.py [--task dmc/cheetah-run] [--seconds 2] [--warp]

One env step = one control step of one env (action repeat 1), with observation and reward. Rows:
the batched CPU backend (mujoco.batch on all cores) at several num_envs; Gymnasium SyncVectorEnv and
AsyncVectorEnv of `ssrl.envs.make(task, obs="state")`; a Python loop of `mujoco.mj_step` over MjData
(physics only, no observation or reward); MuJoCo Warp on warp's CPU device when installed (--warp);
and end-to-end PPO training frames/s. All rows are measured in this one run; ratios are against the
fastest Gymnasium vector env. Prints a table and writes benchmarks/results/batched.json.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import ssrl.envs
from ssrl.config import parse_overrides
from ssrl.envs.batched import load_model, make_batched
from ssrl.experiments.onpolicy import train_ppo

RESULTS = Path(__file__).parent / "results" / "batched.json"


def rate(step: Callable[[], None], envs: int, seconds: float) -> float:
    """Env steps/s of `step()` (which advances `envs` envs one step), over about `seconds` after warm-up."""
    for _ in range(3):
        step()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        calls += 1
    return calls * envs / elapsed


def batched(task: str, envs: int, seconds: float, backend: str = "cpu") -> float:
    env = make_batched(task, envs, backend=backend, action_repeat=1, seed=0)
    env.reset(seed=0)
    actions = torch.rand(envs, *env.single_action_space.shape) * 2 - 1
    return rate(lambda: env.step(actions), envs, seconds)


def gym_vector(task: str, envs: int, seconds: float, kind: str) -> float:
    env = ssrl.envs.make_vec(task, envs, vectorization=kind, obs="state", action_repeat=1, seed=0)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, env.action_space.shape).astype(np.float32)
    try:
        return rate(lambda: env.step(actions), envs, seconds)
    finally:
        env.close()


def mj_step_loop(task: str, envs: int, seconds: float) -> float:
    model = load_model(task)
    data = [mujoco.MjData(model) for _ in range(envs)]

    def step() -> None:
        for d in data:
            mujoco.mj_step(model, d)

    return rate(step, envs, seconds)


def ppo_frames_per_second(task: str, envs: int, frames: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:  # a fresh run (a finished one would resume with no updates)
        cfg = parse_overrides(["agent=ppo", "obs=state", f"env={task}", f"num_envs={envs}", f"frames={frames}",
                               "device=cpu", f"run_dir={run_dir}"])  # fmt: skip
        return float(train_ppo(cfg, verbose=False)[-1]["fps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="dmc/cheetah-run")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per row")
    parser.add_argument("--num-envs", default="1,16,64,256,1024", help="batched num_envs, comma-separated")
    parser.add_argument("--warp", action="store_true", help="also time MuJoCo Warp on warp's CPU device")
    args = parser.parse_args()
    sizes = [int(n) for n in args.num_envs.split(",")]
    torch.set_num_threads(1)  # the physics thread pool owns the cores; torch only handles small tensors
    s, task = args.seconds, args.task

    rows: dict[str, tuple[int, Callable[[], float]]] = {}
    for n in sizes:
        rows[f"batched cpu, {n} envs"] = (n, functools.partial(batched, task, n, s))
    for n in (1, 8):
        rows[f"gymnasium SyncVectorEnv, {n} envs"] = (n, functools.partial(gym_vector, task, n, s, "sync"))
    for n in (2, 8):
        rows[f"gymnasium AsyncVectorEnv, {n} envs"] = (n, functools.partial(gym_vector, task, n, s, "async"))
    for n in (64, 256):
        rows[f"python loop of mj_step (physics only), {n} envs"] = (n, functools.partial(mj_step_loop, task, n, s))
    if args.warp and importlib.util.find_spec("mujoco_warp"):
        for n in (64, 256):
            rows[f"batched warp (warp CPU device), {n} envs"] = (n, functools.partial(batched, task, n, s, "warp"))
    ppo_envs = 64
    rows[f"PPO training, batched cpu, {ppo_envs} envs (frames/s)"] = (
        ppo_envs, functools.partial(ppo_frames_per_second, task, ppo_envs, 100_000))

    console = Console(width=120)
    results: dict[str, float] = {}
    for name, (_, measure) in rows.items():
        results[name] = measure()
        console.print(f"{name}: {results[name]:,.0f}")
    baseline_name = max((k for k in results if k.startswith("gymnasium")), key=results.__getitem__)
    baseline = results[baseline_name]

    table = Table(title=f"{task}, env steps/s (action repeat 1), {os.cpu_count()} CPUs, torch threads "
                        f"{torch.get_num_threads()}")  # fmt: skip
    for column in ("runner", "env steps/s", f"x {baseline_name}"):
        table.add_column(column, justify="left" if column == "runner" else "right")
    for name, value in results.items():
        table.add_row(name, f"{value:,.0f}", f"{value / baseline:.1f}")
    console.print(table)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "task": task, "seconds_per_row": s, "cpus": os.cpu_count(), "machine": platform.machine(),
        "mujoco": mujoco.__version__, "torch": torch.__version__, "baseline": baseline_name,
        "env_steps_per_s": {name: round(value, 1) for name, value in results.items()},
        "ratio_to_baseline": {name: round(value / baseline, 2) for name, value in results.items()},
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
