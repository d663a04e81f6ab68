"""Agent steps/s of a dm_control pixel env: fast vs dm_control render look, and state-only for reference.

    python benchmarks/bench_env.py [--task dmc/cheetah-run] [--steps 500]

Each pixel step renders once (after its action repeat); state steps never render. The offscreen buffer is
max(size, render_size): `size` by default; one row grows it to 256 (as when videos are recorded).
Prints a table and writes benchmarks/results/env.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import ssrl.envs

RESULTS = Path(__file__).parent / "results" / "env.json"


def steps_per_second(env_id: str, steps: int, **options: Any) -> float:
    """Agent steps/s over `steps` random-action steps, after a few warm-up steps."""
    env = ssrl.envs.make(env_id, seed=0, **options)
    env.action_space.seed(0)
    env.reset()
    for _ in range(5):  # creates the GL context and fills caches
        env.step(env.action_space.sample())
    actions = [env.action_space.sample() for _ in range(steps)]
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="dmc/cheetah-run")
    parser.add_argument("--steps", type=int, default=500, help="agent steps per pixel run (state runs 10x)")
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--action-repeat", type=int, default=None, help="default: the task's")
    args = parser.parse_args()

    action_repeat = args.action_repeat or ssrl.envs.default_action_repeat(args.task)
    runs = {
        "pixels, render=fast": {"obs": "pixels", "render": "fast", "steps": args.steps},
        # The offscreen buffer is max(size, render_size); this row grows it to a video's 256x256.
        "pixels, render=fast, buffer=256": {"obs": "pixels", "render": "fast", "render_size": 256, "steps": args.steps},
        "pixels, render=dmc": {"obs": "pixels", "render": "dmc", "steps": args.steps},
        "state (no rendering)": {"obs": "state", "steps": 10 * args.steps},
    }
    rates = {
        name: steps_per_second(args.task, run.pop("steps"), size=args.size, action_repeat=action_repeat, **run)
        for name, run in runs.items()
    }
    ratio = rates["pixels, render=fast"] / rates["pixels, render=dmc"]

    table = Table(title=f"{args.task}, {args.size}x{args.size}, action repeat {action_repeat}, "
                        f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}")  # fmt: skip
    for column in ("observation", "agent steps/s", "physics steps/s"):
        table.add_column(column, justify="right" if "/s" in column else "left")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:,.0f}", f"{rate * action_repeat:,.0f}")
    console = Console()
    console.print(table)
    console.print(f"fast / dmc = {ratio:.1f}x")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "task": args.task, "size": args.size, "steps": args.steps, "action_repeat": action_repeat,
        "mujoco_gl": os.environ.get("MUJOCO_GL"), "cpus": os.cpu_count(), "machine": platform.machine(),
        "agent_steps_per_s": {name: round(rate, 1) for name, rate in rates.items()},
        "fast_over_dmc": round(ratio, 2),
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
