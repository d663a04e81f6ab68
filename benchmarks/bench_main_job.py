"""The README's main job (command 1) end to end: this tree against an older revision, side by side.

    python benchmarks/bench_main_job.py [--old main] [--frames 20000] [--rounds 2]

Checks ``--old`` out into a temporary git worktree, then runs ``ssrl train`` with the README's command
(:data:`main_job.COMMAND`) for ``--frames`` frames from each tree in turn (alternating the order every round, a
fresh run directory each time, one process per run, ``PYTHONPATH`` pointing at the tree). Reports training
frames/s (``meta.json``: frames over training time, evaluations included) and the wall time of the whole
process, as medians over rounds, and the final eval return of each run (same seed: the two trees should agree
up to float rounding). Writes benchmarks/results/main_job_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from main_job import COMMAND

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "main_job_speed.json"


def run(tree: Path, frames: int, run_dir: Path) -> dict[str, float]:
    """One ``ssrl train`` of the main job from ``tree``; its frames/s, wall time and final eval return."""
    cmd = [sys.executable, "-m", "ssrl", "train", *COMMAND, f"frames={frames}", f"run_dir={run_dir}", "progress=false"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=tree, env=os.environ | {"PYTHONPATH": str(tree)}, check=True, capture_output=True)
    wall = time.perf_counter() - start
    meta = json.loads((run_dir / "meta.json").read_text())
    last_eval = (run_dir / "eval.csv").read_text().strip().splitlines()[-1].split(",")
    header = (run_dir / "eval.csv").read_text().splitlines()[0].split(",")
    return {"frames_per_s": meta["frames_per_s"], "wall_s": round(wall, 2),
            "final_return": round(float(last_eval[header.index("episode_reward")]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default="main", help="git revision to compare against")
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    old_rev = subprocess.run(["git", "rev-parse", "--short", args.old], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.strip()
    new_rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="ssrl-main-job-") as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), old_rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            trees = {f"old ({old_rev})": old_tree, f"new ({new_rev})": ROOT}
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for r in range(args.rounds):
                for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                    runs[name].append(run(trees[name], args.frames, Path(tmp) / f"run-{r}-{name.split()[0]}"))
                    print(f"round {r}: {name}: {runs[name][-1]}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=True)

    median = {name: {key: statistics.median(x[key] for x in v) for key in ("frames_per_s", "wall_s")}
              for name, v in runs.items()}
    old, new = median.values()
    print(f"\n`ssrl train {' '.join(COMMAND)} frames={args.frames}`, median of {args.rounds} rounds")
    print("| tree | frames/s | wall s | final return per round | speed-up |\n|---|---:|---:|---|---:|")
    for name, m in median.items():
        returns = ", ".join(f"{x['final_return']:.1f}" for x in runs[name])
        print(f"| {name} | {m['frames_per_s']:.0f} | {m['wall_s']:.1f} | {returns} | "
              f"{m['frames_per_s'] / old['frames_per_s']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": COMMAND, "frames": args.frames, "rounds": args.rounds, "cpus": os.cpu_count(),
        "machine": platform.machine(), "load_average": os.getloadavg(), "median": median,
        "speedup_frames_per_s": round(new["frames_per_s"] / old["frames_per_s"], 3), "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
