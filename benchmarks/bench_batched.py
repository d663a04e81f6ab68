"""Env steps/s of batched dm_control tasks against raw MuJoCo physics and Gymnasium's envs, side by side.

    python benchmarks/bench_batched.py [--task dmc/cheetah-run] [--physics-tasks all] [--rounds 3] [--seconds 1]

Two tables, every row measured in this one run, alternating within each round (medians over rounds):

1. **vs Gymnasium** (`--task`, action repeat 1; one env step = one control step of one env, with observation
   and reward): the batched CPU backend (`mujoco.batch` on all cores) at several num_envs; a plain Gymnasium env
   (`ssrl.envs.make(task, obs="state")`); Gymnasium SyncVectorEnv and AsyncVectorEnv of it; a Python loop of
   `mujoco.mj_step` over MjData and raw `mujoco.batch` (physics only, as in table 2); MuJoCo Warp when installed
   (--warp, on --warp-device);
   and end-to-end PPO training frames/s. Ratios are to SyncVectorEnv (its faster size).
2. **vs raw physics** (`--physics-tasks`, each task's default action repeat): `make_batched(task, n)` stepping
   agent steps against `mujoco.batch.Batch` on the same model, the same threads and the same mj_steps per
   agent step (action repeat x substeps, one call), writing only `ctrl`, from the env's initial states and with
   its controls, restarting where its episodes end: the share of the physics limit the env keeps after
   observations, rewards, counters and autoreset. A last column times the env with its repeats
   stepped chunk by chunk, a call per repeat (the path before `Batch.rollout`; RK4 cartpole always takes it).

Prints both tables and writes benchmarks/results/batched.json (`--out` to change).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mujoco
import mujoco.batch
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import ssrl.envs
from ssrl.config import parse_overrides
from ssrl.envs.batched import list_batched_tasks, load_model, make_batched
from ssrl.envs.batched.tasks import EPISODE_CONTROL_STEPS
from ssrl.experiments.onpolicy import train_ppo

RESULTS = Path(__file__).parent / "results" / "batched.json"
Stepper = Callable[[], None]  # one step of a built env


def rate(step: Callable[[], None], envs: int, seconds: float) -> float:
    """Env steps/s of `step()` (which advances `envs` envs one step), over about `seconds` after warm-up."""
    for _ in range(3):
        step()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        calls += 1
    return calls * envs / elapsed


def batched(task: str, envs: int, backend: str = "cpu", action_repeat: int = 1, device: str = "cpu",
            chunked: bool = False) -> Stepper:
    """`chunked`: the repeats go chunk by chunk, a call per repeat (`CpuSim.repeat`'s path before rollouts)."""
    env = make_batched(task, envs, backend=backend, action_repeat=action_repeat, seed=0, device=device)
    if chunked:
        assert env._records is not None  # noqa: SLF001 - the repeats are recorded (num_envs above a chunk)
        env.sim.rolls_out = lambda names: False
    env.reset(seed=0)
    actions = fixed_actions(env).to(device)
    step = lambda: env.step(actions)  # noqa: E731 - the step reads its done flags on the host: synchronised
    step.close = env.close  # type: ignore[attr-defined]
    return step


def fixed_actions(env: Any) -> torch.Tensor:
    """The uniform random actions every step of a timed env takes (seed 0)."""
    shape = (env.num_envs, *env.single_action_space.shape)
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


@functools.cache
def substeps(task: str) -> int:
    """MuJoCo substeps per control step of a batched task."""
    return make_batched(task, 1).substeps


def raw_physics(task: str, envs: int, action_repeat: int) -> Stepper:
    """`mujoco.batch` on the batched env's model and threads, the agent step's mj_steps in one call. It simulates
    what the timed env does (physics cost depends on the state: contacts, a fallen walker): it starts from the
    states of the env's first reset, writes the controls of the env's fixed actions, and goes back to those states
    where the env's episodes end."""
    env = make_batched(task, envs, action_repeat=action_repeat, seed=0)
    env.reset(seed=0)
    start = env.sim.batch.state.copy()
    env.step(fixed_actions(env))
    controls = env.sim.array("ctrl").copy()
    env.close()
    model = load_model(task)
    nstep, threads = substeps(task) * action_repeat, min(os.cpu_count() or 1, envs)
    batch = mujoco.batch.Batch(model, envs, threads, persistent=True)
    batch.state[:] = start
    ctrl = batch.bind("ctrl")
    episode, steps = EPISODE_CONTROL_STEPS // action_repeat, 0

    def step() -> None:
        nonlocal steps
        if steps == episode:
            batch.state[:] = start
            steps = 0
        ctrl[:] = controls
        batch.step(nstep=nstep, stage=mujoco.mjtStage.mjSTAGE_VEL)
        steps += 1

    return step


def gym_env(task: str) -> Stepper:
    env = ssrl.envs.make(task, obs="state", action_repeat=1, seed=0)
    env.reset(seed=0)
    action = np.random.default_rng(0).uniform(-1, 1, env.action_space.shape).astype(np.float32)

    def step() -> None:
        if any(env.step(action)[2:4]):
            env.reset()

    return step


def gym_vector(task: str, envs: int, kind: str) -> Stepper:
    env = ssrl.envs.make_vec(task, envs, vectorization=kind, obs="state", action_repeat=1, seed=0)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, env.action_space.shape).astype(np.float32)
    step = lambda: env.step(actions)  # noqa: E731
    step.close = env.close  # type: ignore[attr-defined]
    return step


def mj_step_loop(task: str, envs: int) -> Stepper:
    model = load_model(task)
    data = [mujoco.MjData(model) for _ in range(envs)]

    def step() -> None:
        for d in data:
            mujoco.mj_step(model, d)

    return step


def ppo_frames_per_second(task: str, envs: int, frames: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:  # a fresh run (a finished one would resume with no updates)
        cfg = parse_overrides(["agent=ppo", "obs=state", f"env={task}", f"num_envs={envs}", f"frames={frames}",
                               "device=cpu", f"run_dir={run_dir}"])  # fmt: skip
        return float(train_ppo(cfg, verbose=False)[-1]["fps"])


def measure(rows: dict[str, tuple[int, Callable[[], Stepper]]], rounds: int, seconds: float) -> dict[str, float]:
    """Median steps/s per row over `rounds`; each round builds and times every row, in alternating order.

    Each row's env is closed and collected before the next is built: a live `mujoco.batch` thread pool slows
    other batches in the process (a 1-env batch by ~15% beside an idle 1024-env one).
    """
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(rounds):
        for name in list(rows) if r % 2 == 0 else reversed(list(rows)):
            envs, build = rows[name]
            step = build()
            samples[name].append(rate(step, envs, seconds))
            if hasattr(step, "close"):
                step.close()
            del step
            gc.collect()
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="dmc/cheetah-run")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing window per row and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-envs", default="1,16,64,256,1024,4096", help="batched num_envs, comma-separated")
    parser.add_argument("--physics-tasks", default="all", help="tasks of the raw-physics table ('all' or ids)")
    parser.add_argument("--physics-envs", default="256,1024", help="num_envs of the raw-physics table")
    parser.add_argument("--warp", action="store_true", help="also time MuJoCo Warp (on --warp-device)")
    parser.add_argument("--warp-device", default="cpu", help="'cpu' (warp's CPU device) or 'cuda'")
    parser.add_argument("--warp-envs", default="64,256", help="num_envs of the warp rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the physics thread pool owns the cores; torch only handles small tensors
    task, s = args.task, args.seconds
    console = Console(width=130)

    rows: dict[str, tuple[int, Callable[[], Stepper]]] = {}
    for n in [int(n) for n in args.num_envs.split(",")]:
        rows[f"batched cpu, {n} envs"] = (n, lambda n=n: batched(task, n))
    rows["gymnasium env (ssrl.envs.make), 1 env"] = (1, lambda: gym_env(task))
    for n in (1, 8):
        rows[f"gymnasium SyncVectorEnv, {n} envs"] = (n, lambda n=n: gym_vector(task, n, "sync"))
    for n in (2, 8):
        rows[f"gymnasium AsyncVectorEnv, {n} envs"] = (n, lambda n=n: gym_vector(task, n, "async"))
    for n in (64, 256):
        rows[f"python loop of mj_step (physics only), {n} envs"] = (n, lambda n=n: mj_step_loop(task, n))
    for n in (1024, 4096):
        rows[f"raw mujoco.batch (physics only), {n} envs"] = (n, lambda n=n: raw_physics(task, n, 1))
    if args.warp and importlib.util.find_spec("mujoco_warp"):
        device = args.warp_device
        for n in [int(n) for n in args.warp_envs.split(",")]:
            rows[f"batched warp ({device}), {n} envs"] = (n, lambda n=n: batched(task, n, "warp", device=device))
    results = measure(rows, args.rounds, s)
    ppo_name = "PPO training, batched cpu, 64 envs (frames/s)"
    results[ppo_name] = ppo_frames_per_second(task, 64, 100_000)
    baseline_name = max((k for k in results if k.startswith("gymnasium SyncVectorEnv")), key=results.__getitem__)
    baseline = results[baseline_name]
    table = Table(title=f"{task}, env steps/s (action repeat 1), {os.cpu_count()} CPUs, median of {args.rounds}")
    for column in ("runner", "env steps/s", f"x {baseline_name}"):
        table.add_column(column, justify="left" if column == "runner" else "right")
    for name, value in results.items():
        table.add_row(name, f"{value:,.0f}", f"{value / baseline:.1f}")
    console.print(table)

    tasks = list_batched_tasks() if args.physics_tasks == "all" else args.physics_tasks.split(",")
    sizes = [int(n) for n in args.physics_envs.split(",")]
    physics: dict[str, dict[str, dict[str, float]]] = {}
    table = Table(title=f"Batched env vs raw mujoco.batch (same model, threads, mj_steps per agent step; "
                        f"median of {args.rounds})")  # fmt: skip
    columns = ("task", "action repeat x substeps", "envs", "env agent steps/s", "raw, one call", "env / raw",
               "env / raw, chunked repeats")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "task" else "right")
    for env_id in tasks:
        repeat = ssrl.envs.default_action_repeat(env_id)
        steps = substeps(env_id)
        for n in sizes:
            pair = {"env": (n, lambda n=n, e=env_id, r=repeat: batched(e, n, action_repeat=r)),
                    "raw": (n, lambda n=n, e=env_id, r=repeat: raw_physics(e, n, r)),
                    "chunked": (n, lambda n=n, e=env_id, r=repeat: batched(e, n, action_repeat=r, chunked=True))}
            got = measure(pair, args.rounds, s)
            ratio = got["env"] / got["raw"]
            physics.setdefault(env_id, {})[str(n)] = {"action_repeat": repeat, "substeps": steps,
                                                      "env": round(got["env"], 1), "raw": round(got["raw"], 1),
                                                      "ratio": round(ratio, 3), "env_chunked": round(got["chunked"], 1),
                                                      "ratio_chunked": round(got["chunked"] / got["raw"], 3)}
            table.add_row(env_id, f"{repeat} x {steps}", str(n), f"{got['env']:,.0f}", f"{got['raw']:,.0f}",
                          f"{ratio:.0%}", f"{got['chunked'] / got['raw']:.0%}")  # fmt: skip
            console.print(f"{env_id} {n} envs: {ratio:.0%}")
    console.print(table)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "task": task, "seconds_per_row": s, "rounds": args.rounds, "cpus": os.cpu_count(),
        "machine": platform.machine(), "mujoco": mujoco.__version__, "torch": torch.__version__,
        "baseline": baseline_name,
        "env_steps_per_s": {name: round(value, 1) for name, value in results.items()},
        "ratio_to_baseline": {name: round(value / baseline, 2) for name, value in results.items()},
        "vs_raw_physics": physics,
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
