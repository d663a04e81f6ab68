"""DMC-100k reproduction in one command: run the suite, then compare final returns with the published numbers.

    python benchmarks/repro_dmc100k.py [--proxy | --suite dmc500k] [--seeds N] [--jobs N] [--agent sac]
                                       [--representation curl] [--tasks T1,T2] [--reference DIR]
                                       [extra key=value overrides...]

Runs ``ssrl train suite=dmc100k`` (``--proxy``: ``suite=dmc100k-proxy``, the CPU proxy) through multirun, so a
rerun skips finished runs and resumes interrupted ones, then ``ssrl report`` over those runs (figures and
summary.md in ``reports/<experiment>/``). ``--tasks`` runs a subset of the suite's tasks in the order given (the
same run directories as the whole suite, so a later run of more tasks skips them); the report covers every run
under ``runs/<experiment>/``. Writes the comparison with the CURL paper's Table 1 (and DrQ-v2's
published curves at the same frame, with ``--reference``) to ``benchmarks/results/<experiment>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ssrl.experiments import multirun, report
from ssrl.experiments.suites import load_suite

RESULTS = Path(__file__).parent / "results"
DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "drqv2_curves"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", action="store_true", help="the CPU proxy suite dmc100k-proxy (not comparable)")
    parser.add_argument("--suite", default="dmc100k", choices=("dmc100k", "dmc500k"))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--agent", default="sac")
    parser.add_argument("--representation", default="curl")
    parser.add_argument("--tasks", help="comma list of the suite's tasks to run, in this order (default: all), "
                        "e.g. cartpole-swingup,reacher-easy")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE if DEFAULT_REFERENCE.is_dir() else None,
                        help="DrQ-v2 curves (default: ../shared/reference/drqv2_curves when present)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples of the report")
    parser.add_argument("overrides", nargs="*", help="extra ssrl train key=value overrides (e.g. device=cuda)")
    ns = parser.parse_args(argv)
    suite = "dmc100k-proxy" if ns.proxy else ns.suite
    experiment = f"{suite}-{ns.agent}-{ns.representation}"
    suite_arg = suite
    if ns.tasks:  # the chosen tasks with the suite's settings, as a suite file (same run names as the suite's)
        tasks = load_suite(suite).tasks
        chosen = [t if "/" in t else f"dmc/{t}" for t in ns.tasks.split(",")]
        if unknown := [t for t in chosen if t not in tasks]:
            parser.error(f"--tasks: {', '.join(unknown)} not in {suite} ({', '.join(tasks)})")
        suite_dir = tempfile.TemporaryDirectory()
        suite_arg = str(Path(suite_dir.name) / f"{suite}.yaml")
        Path(suite_arg).write_text(yaml.safe_dump({"name": suite, "tasks": [{"env": t, **tasks[t]} for t in chosen]},
                                                  sort_keys=False))
    args = [f"suite={suite_arg}", f"agent={ns.agent}", f"representation={ns.representation}", f"seeds={ns.seeds}",
            f"jobs={ns.jobs}", f"experiment={experiment}", *ns.overrides]
    start = time.perf_counter()
    code = multirun.main(args)
    wall = time.perf_counter() - start
    root = multirun.expand(args).root
    if ns.tasks:
        suite_dir.cleanup()
    s = report.build_report([root], Path("reports") / experiment, ns.reference, ns.reps)
    frames = {t: r["frame"] for t, r in s["per_task"].items()}
    metas = [json.loads(p.read_text()) for p in root.glob("*/meta.json")]
    train_s = sum(m.get("elapsed_s") or 0.0 for m in metas)
    shown = [f"suite={suite}", *args[1:]] + ([f"(tasks {ns.tasks})"] if ns.tasks else [])
    lines = [f"# {experiment}: {ns.seeds} seed(s), `{' '.join(shown)}`", "",
             (f"Wall time {wall / 60:.1f} min for this invocation ({ns.jobs} at a time; finished runs are skipped), "
              f"{train_s / 60:.0f} min of training summed over the {len(metas)} runs' meta.json, on {platform.node()} "
              f"({platform.processor() or platform.machine()}); report in reports/{experiment}/.")]
    lines += report.published_markdown(s["published"], frames)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{experiment}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{experiment}.json").write_text(json.dumps(
        {"command": shown, "wall_s": wall, "train_s": train_s, "host": platform.node(), "frames": frames, "per_task": s["per_task"],
         "published": s["published"], "aggregate": s["aggregate"]}, indent=2))
    print("\n".join(lines))
    print(f"-> {RESULTS / experiment}.md / .json")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
