"""How much faster the README's two jobs could get on this machine at their settings: a speed-of-light bound.

    python benchmarks/bench_bound.py [--repeat 3] [--updates 3] [--rounds 10]

For each job (command 1, state SAC at ``threads=1``, and the pixel example at torch's default threads) it builds the
run's own env and agent, then measures in one process, side by side:

- the FLOPs of one agent update (``torch.utils.flop_counter.FlopCounterMode``: matmuls and convolutions, forward and
  backward, averaged over two updates, as the actor updates every second one), and its wall time;
- the fastest fp32 matmul this CPU runs at the job's thread count (square sgemm, 256 to 2048: the peak);
- one agent step of the env (action repeat included, rendering for pixels) and one action of the policy.

From the run's schedule (frames, seed frames, evaluations) it models the run's time as updates + training steps
+ evaluation steps, and bounds it from below three ways: ``hidden`` keeps the update as measured and hides everything
else (env, acting, evaluation) perfectly behind it; ``kernels`` also drops everything in the update but its matmul
and convolution kernels (their CPU time under ``torch.profiler``: no Python, dispatch, elementwise ops or optimizer);
``peak`` runs every update's FLOPs at the sgemm peak instead.
``bound x`` is the modelled time over a floor: the most any change at these settings can gain on this machine
without also speeding up what that floor keeps (the update; its kernels; nothing, at the peak). ``--repeat`` runs
the whole measurement again, each a row (a shared host moves these figures by tens of percent). Writes
benchmarks/results/bound.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import torch
from main_job import COMMAND
from rich.console import Console
from rich.table import Table
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from ssrl import config as config_lib
from ssrl.experiments.offpolicy import Trainer

RESULTS = Path(__file__).parent / "results" / "bound.json"
PIXEL_COMMAND = ["env=dmc/cartpole-swingup", "frames=30000", "size=64", "agent.batch_size=128", "seed_frames=2000",
                 "eval_every=5000", "eval_episodes=5"]  # the README's pixel example
KERNELS = re.compile(r"^aten::(mm|addmm|bmm|baddbmm|mkldnn_convolution|convolution_backward|_slow_conv2d)")
JOBS = {"state (command 1)": COMMAND, "pixels (the long example)": PIXEL_COMMAND}


def peak_gflops(threads: int, rounds: int) -> float:
    """The best fp32 matmul rate (GFLOP/s) over square sizes at ``threads`` threads."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in (256, 512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        reps = max(2, int(2e9 // (2 * n**3)))
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def timed(fn, n: int, rounds: int) -> float:
    """The fastest over ``rounds`` of the mean seconds of ``n`` calls (as the peak is the fastest matmul: both are
    what the quietest moment of a shared machine gives)."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n)
    return min(samples)


def measure(command: list[str], args: argparse.Namespace, work: Path) -> dict:
    """One job's schedule, update FLOPs and the seconds of its parts."""
    cfg = config_lib.parse_overrides([*command, f"run_dir={work}", "progress=false"])
    trainer = Trainer(cfg)
    env, agent, replay = trainer.env, trainer.agent, trainer.replay
    threads = torch.get_num_threads()
    obs, _ = env.reset(seed=0)
    replay.add_first(obs)
    steps = 0

    def env_step() -> None:
        nonlocal obs, steps
        action = env.action_space.sample()
        obs, reward, terminated, truncated, _ = env.step(action)
        replay.add(action, float(reward), obs, terminated, truncated)
        steps += 1
        if terminated or truncated:
            obs, _ = env.reset(seed=steps)
            replay.add_first(obs)

    env_s = timed(env_step, max(50, 4 * args.updates), args.rounds)
    act_s = timed(lambda: agent.act(obs, cfg.frames, eval_mode=False), 100, args.rounds)
    eval_act_s = timed(lambda: agent.act(obs, cfg.frames, eval_mode=True), 100, args.rounds)
    agent.update(replay, cfg.frames)
    update_s = timed(lambda: agent.update(replay, cfg.frames), args.updates, args.rounds)
    with FlopCounterMode(display=False) as counter:
        agent.update(replay, cfg.frames)
        agent.update(replay, cfg.frames)
    flops = counter.get_total_flops() / 2
    kernel_s = float("inf")
    for _ in range(3):  # the fastest of three profiled pairs of updates
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            agent.update(replay, cfg.frames)
            agent.update(replay, cfg.frames)
        kernel_s = min(kernel_s, sum(e.self_cpu_time_total for e in prof.key_averages() if KERNELS.search(e.key)) / 2e6)
    trainer.release()

    repeat = trainer.action_repeat
    episode_steps = env.get_wrapper_attr("max_episode_steps") // repeat
    train_steps = cfg.frames // repeat
    updates = train_steps - cfg.seed_frames // repeat
    eval_steps = (cfg.frames // cfg.eval_every + 1) * cfg.eval_episodes * episode_steps
    return {"command": command, "threads": threads, "action_repeat": repeat, "train_steps": train_steps,
            "updates": updates, "eval_steps": eval_steps, "update_gflop": flops / 1e9, "update_s": update_s,
            "kernel_s": kernel_s, "env_step_s": env_s, "act_s": act_s, "eval_act_s": eval_act_s}


def bound(job: dict, peak: float) -> dict:
    """The modelled run time, its three floors and the bound over each (module docstring)."""
    model = (job["updates"] * job["update_s"] + job["train_steps"] * (job["env_step_s"] + job["act_s"])
             + job["eval_steps"] * (job["env_step_s"] + job["eval_act_s"]))
    hidden = job["updates"] * job["update_s"]
    kernels = job["updates"] * job["kernel_s"]
    at_peak = job["updates"] * job["update_gflop"] / peak
    return {"peak_gflops": peak, "update_gflops": job["update_gflop"] / job["update_s"], "model_s": model,
            "floor_hidden_s": hidden, "floor_kernels_s": kernels, "floor_peak_s": at_peak,
            "bound_hidden": model / hidden, "bound_kernels": model / kernels, "bound_peak": model / at_peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=3, help="timed updates per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="whole measurements, each a row (host noise)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ssrl-bound-") as tmp:
        for repeat in range(args.repeat):
            for i, (name, command) in enumerate(JOBS.items()):
                job = measure(command, args, Path(tmp) / f"run{repeat}-{i}")
                rows.append({"job": name, "repeat": repeat} | job | bound(job, peak_gflops(job["threads"], args.rounds)))
                torch.set_num_threads(default_threads)
                print(json.dumps(rows[-1]), flush=True)

    table = Table(title="Speed-of-light bound of the README's jobs on this machine (same settings, fp32)")
    for column in ("job", "threads", "updates", "GFLOP / update", "update ms (kernels)", "update GFLOP/s (peak)",
                   "env step ms", "act ms", "modelled run s", "floor: others hidden", "+ only matmul/conv kernels",
                   "+ kernels at peak"):
        table.add_column(column, justify="left" if column == "job" else "right")
    for r in sorted(rows, key=lambda r: r["job"]):
        table.add_row(r["job"], str(r["threads"]), f"{r['updates']:,}", f"{r['update_gflop']:.2f}",
                      f"{r['update_s'] * 1e3:.1f} ({r['kernel_s'] * 1e3:.1f})",
                      f"{r['update_gflops']:.0f} ({r['peak_gflops']:.0f})", f"{r['env_step_s'] * 1e3:.2f}",
                      f"{r['act_s'] * 1e3:.2f}", f"{r['model_s']:.0f}",
                      f"{r['floor_hidden_s']:.0f} s = {r['bound_hidden']:.2f}x",
                      f"{r['floor_kernels_s']:.0f} s = {r['bound_kernels']:.2f}x",
                      f"{r['floor_peak_s']:.0f} s = {r['bound_peak']:.2f}x")
    Console(width=200).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
                                    "load_average": os.getloadavg(), "args": {k: str(v) for k, v in vars(args).items()},
                                    "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
