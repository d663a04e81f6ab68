"""The README's main job over seeds: eval return at each evaluation, mean ± std over seeds.

    python benchmarks/main_job.py [--seeds 3] [--jobs 2]      # runs the README's command 1 per seed, then tabulates
    python benchmarks/main_job.py --runs DIR [DIR ...]        # tabulates finished runs of the same settings

Runs ``ssrl train`` with :data:`COMMAND` (the README's command 1) for seeds 0..N-1 through multirun into
``runs/main_job/`` (a rerun skips finished seeds), or reads the given run directories after checking that each
one's ``config.yaml`` has those settings. Prints the table and writes ``benchmarks/results/main_job.json``:
per frame, the per-seed eval means, their mean and std over seeds, and each run's wall time and frames/s.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from pathlib import Path

import numpy as np

from ssrl import config as config_lib
from ssrl.envs import default_action_repeat
from ssrl.experiments import multirun

RESULTS = Path(__file__).parent / "results"
COMMAND = ["env=dmc/cartpole-swingup", "obs=state", "agent.hidden_dim=256", "agent.batch_size=256", "threads=1"]


def check(run: Path) -> None:
    """Refuse a run whose settings differ from :data:`COMMAND` (threads and bookkeeping keys aside)."""
    want = config_lib.parse_overrides([*COMMAND, f"seed={config_lib.load(run / 'config.yaml').seed}"])
    have = config_lib.load(run / "config.yaml")
    def value(cfg: config_lib.TrainConfig, key: str) -> object:  # action_repeat=0 is the task's default
        v = getattr(cfg, key)
        return default_action_repeat(cfg.env) if key == "action_repeat" and v == 0 else v

    for key in ("env", "obs", "frames", "action_repeat", "seed_frames", "eval_every", "eval_episodes"):
        if value(want, key) != value(have, key):
            sys.exit(f"{run}: {key}={value(have, key)!r}, the README's command has {value(want, key)!r}")
    if (want.agent, want.encoder, want.representation) != (have.agent, have.encoder, have.representation):
        sys.exit(f"{run}: agent/encoder/representation settings differ from the README's command")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--runs", type=Path, nargs="*", help="finished run directories of the same settings")
    ns = parser.parse_args(argv)
    runs = ns.runs
    if not runs:
        args = [*COMMAND, f"seeds={ns.seeds}", f"jobs={ns.jobs}", "progress=false", "run_dir=runs/main_job"]
        if code := multirun.main(args):
            return code
        grid = multirun.expand(args)
        runs = [grid.root / multirun.run_name(job, grid.varying) for job in grid.jobs]
    per_seed, sessions = {}, []
    for run in runs:
        check(run)
        with (run / "eval.csv").open() as f:
            for row in csv.DictReader(f):
                per_seed.setdefault(int(float(row["frame"])), []).append(float(row["episode_reward"]))
        m = json.loads((run / "meta.json").read_text())
        sessions.append({"run": str(run), "wall_s": m.get("elapsed_s"), "frames_per_s": m.get("frames_per_s"), "frame": m.get("frame")})
    rows = [{"frame": f, "returns": v, "mean": float(np.mean(v)), "std": float(np.std(v))}
            for f, v in sorted(per_seed.items())]
    lines = [f"`ssrl train {' '.join(COMMAND)}`, {len(runs)} seeds: eval return (10 episodes), mean ± std over seeds",
             "| frame | " + " | ".join(f"{r['frame'] // 1000}k" for r in rows) + " |",
             "|---|" + "---:|" * len(rows),
             "| return | " + " | ".join(f"{r['mean']:.0f} ± {r['std']:.0f}" for r in rows) + " |"]
    print("\n".join(lines))
    for s in sessions:
        print(f"{s['run']}: {s['frame']} frames in {s['wall_s']} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "main_job.json").write_text(json.dumps({"command": COMMAND, "host": platform.node(), "evals": rows,
                                                       "runs": sessions}, indent=2))
    print(f"-> {RESULTS / 'main_job.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
