"""Multi-run: comma lists in ``ssrl train`` overrides expand to a grid of runs executed in parallel.

``ssrl train env=dmc/cheetah-run,dmc/walker-walk representation=curl,spr seeds=3 jobs=2`` runs 12 trainings,
two at a time, each as its own ``ssrl train`` process (no fork after a GL context exists) in
``runs/<experiment>/<overrides>``. Rerunning the same command skips finished runs and resumes interrupted ones
from their checkpoints. Commas inside brackets or quotes do not split: ``agent.stddev_schedule=linear(1.0,0.1,5e5)``
is one value.

Multirun-only keys: ``suite=NAME`` (a benchmark from :mod:`ssrl.experiments.suites`), ``seeds=N`` (seeds
0..N-1), ``jobs=N`` (parallel runs; default: CPU count). ``experiment=NAME`` names the group (default
``multirun``, or the suite's name with ``suite=``); ``run_dir=ROOT`` replaces ``runs/<experiment>`` as the parent
directory.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

import ssrl
from ssrl import config as config_lib
from ssrl.errors import ConfigError
from ssrl.experiments.suites import load_suite
from ssrl.runtime import meta
from ssrl.runtime.checkpoint import RESUMABLE_KEYS

MULTIRUN_KEYS = ("suite", "seeds", "jobs")
SINGLE_VALUED = ("run_dir", "experiment")  # paths and names: commas in them never split
_OPEN, _CLOSE = "([{", ")]}"
console = Console(soft_wrap=True)


# ------------------------------------------------------------------------------------------------ parsing
def split_values(value: str) -> list[str]:
    """Split ``value`` at commas outside brackets and quotes: ``a,linear(1,2),b`` -> ``[a, linear(1,2), b]``."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(value):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced '{ch}' in '{value}'")
        elif ch == "," and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    if depth or quote:
        raise ConfigError(f"unclosed bracket or quote in '{value}'")
    parts.append(value[start:])
    if any(not p.strip() for p in parts):
        raise ConfigError(f"empty value in comma list '{value}'")
    return [p.strip() for p in parts]


def is_multirun(args: list[str]) -> bool:
    """Whether these ``ssrl train`` arguments ask for more than one run (or a multirun-only key)."""
    return any(k in MULTIRUN_KEYS or (k not in SINGLE_VALUED and len(split_values(v)) > 1)
               for k, v in config_lib.split_pairs(args))


@dataclass
class Grid:
    """The expanded runs: ``jobs`` (one override list each), the keys that vary, and the multirun settings."""

    jobs: list[list[str]]
    varying: set[str]
    parallel: int
    root: Path
    experiment: str


def expand(args: list[str]) -> Grid:
    """Expand comma lists, ``suite=`` and ``seeds=`` into the Cartesian product of runs, in argument order."""
    axes: list[list[list[str]]] = []
    varying: set[str] = set()
    keys = [k for k, _ in config_lib.split_pairs(args)]
    parallel, root, experiment = os.cpu_count() or 1, "", "multirun"
    suite = dict(config_lib.split_pairs(args)).get("suite")
    if suite and "experiment" not in keys:  # a suite's runs are grouped under its name, e.g. runs/dmc100k-proxy
        experiment = Path(suite).stem
    if "seeds" in keys and "seed" in keys:
        raise ConfigError("give either seed=... or seeds=N, not both")
    for key, value in config_lib.split_pairs(args):
        values = [value] if key in SINGLE_VALUED else split_values(value)
        if key == "jobs":
            parallel = _positive(key, value)
        elif key == "seeds":
            axes.append([[f"seed={s}"] for s in range(_positive(key, value))])
            varying.add("seed")
        elif key == "suite":
            if len(values) > 1:
                raise ConfigError("suite= takes one suite name")
            tasks = load_suite(value).overrides()
            axes.append(tasks)
            varying |= {k for task in tasks for k, _ in config_lib.split_pairs(task)}
        elif key == "run_dir":
            root = value
        elif key == "experiment":  # given to every run by run_grid
            experiment = value
        else:
            axes.append([[f"{key}={v}"] for v in values])
            if len(values) > 1:
                varying.add(key)
    jobs = [[o for part in combo for o in part] for combo in itertools.product(*axes)]
    return Grid(jobs, varying, parallel, Path(root or Path("runs") / experiment), experiment)


def _positive(key: str, value: str) -> int:
    if not value.isdigit() or int(value) <= 0:
        raise ConfigError(f"{key}={value!r}: expected a positive integer")
    return int(value)


def run_name(overrides: list[str], varying: set[str] = frozenset()) -> str:
    """A directory name from a run's overrides, e.g. ``seed=0,env=dmc-cheetah-run``: the ``varying`` keys
    first, then the others except those that do not change the result (``frames``, ``device``, ...: the keys a
    resumed run may change). Long names are cut and end in a hash of the whole."""
    pairs = config_lib.split_pairs(overrides)
    parts = [f"{k}={v}" for k, v in pairs if k in varying]
    parts += [f"{k}={v}" for k, v in pairs if k not in varying and k not in RESUMABLE_KEYS]
    name = re.sub(r"[^A-Za-z0-9._=,+()-]", "_", ",".join(parts).replace("/", "-")) or "default"
    if len(name) > 150:
        name = f"{name[:140]}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    return name


# ------------------------------------------------------------------------------------------------ running
# `ssrl train` in a child that ends with whoever launched it (Linux: PR_SET_PDEATHSIG), so a killed multirun, sweep
# or Ray trial leaves no orphan training; the run resumes from its checkpoint next time.
_CHILD = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
except (OSError, AttributeError):
    pass
if os.getppid() != int(os.environ["SSRL_LAUNCHER_PID"]):
    sys.exit("ssrl: the launching process is gone")
from ssrl.cli import main
sys.exit(main())
"""


def launch_train(overrides: list[str], run_dir: Path) -> subprocess.Popen:
    """Start ``ssrl train`` (this same ssrl source, whatever the working directory) for ``run_dir``, its output
    appended to ``run_dir/train.log``. A fresh interpreter per run: no GL context is ever forked."""
    run_dir.mkdir(parents=True, exist_ok=True)
    source = str(Path(ssrl.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-c", _CHILD, "train", *overrides, f"run_dir={run_dir}", "progress=false"]
    env = os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": path, "SSRL_LAUNCHER_PID": str(os.getpid())}
    with (run_dir / "train.log").open("a") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


@dataclass
class Job:
    overrides: list[str]
    run_dir: Path
    frames: int
    status: str = "pending"
    returncode: int | None = None


def plan(grid: Grid) -> list[Job]:
    """One :class:`Job` per grid point; every config is checked before anything runs."""
    jobs = []
    for overrides in grid.jobs:
        try:
            cfg = config_lib.parse_overrides(overrides)
        except ConfigError as e:
            raise ConfigError(f"run {' '.join(overrides)}: {e}") from None
        jobs.append(Job(overrides, grid.root / run_name(overrides, grid.varying), cfg.frames))
    dirs = [j.run_dir for j in jobs]
    if len(set(dirs)) != len(dirs):
        raise ConfigError("two runs of the grid map to the same directory; give them distinct overrides")
    return jobs


def _run(job: Job, experiment: str, threads: int, procs: dict[int, subprocess.Popen], lock: threading.Lock) -> Job:
    if meta.is_finished(job.run_dir, job.frames):
        job.status = "skipped"
        return job
    extra = [f"experiment={experiment}"]
    if not any(o.startswith("threads=") for o in job.overrides):
        extra.append(f"threads={threads}")
    console.print(f"[bold]start[/] {job.run_dir}")
    proc = launch_train(job.overrides + extra, job.run_dir)
    with lock:
        procs[proc.pid] = proc
    job.returncode = proc.wait()
    with lock:
        procs.pop(proc.pid, None)
    job.status = "finished" if job.returncode == 0 else "failed"
    color = "green" if job.returncode == 0 else "red"
    console.print(f"[{color}]{job.status}[/] {job.run_dir}" + (f" (exit {job.returncode}, see train.log)"
                                                              if job.returncode else ""))
    return job


def run_grid(grid: Grid) -> list[Job]:
    """Run every job of ``grid``, ``grid.parallel`` at a time; a failed run does not stop the others."""
    jobs = plan(grid)
    threads = max(1, (os.cpu_count() or 1) // grid.parallel)
    procs: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()
    console.print(f"[bold]multirun[/] {len(jobs)} runs in {grid.root}, {grid.parallel} at a time")
    pool = ThreadPoolExecutor(grid.parallel)
    try:
        for future in [pool.submit(_run, j, grid.experiment, threads, procs, lock) for j in jobs]:
            future.result()
    except BaseException:  # Ctrl-C: stop the children; their checkpoints let a rerun resume
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            for proc in procs.values():
                proc.terminate()
        raise
    pool.shutdown()
    return jobs


def main(args: list[str]) -> int:
    """``ssrl train`` with a grid: run it and print one row per run; exit 1 if any run failed."""
    jobs = run_grid(expand(args))
    table = Table("run", "status", "frames", "final eval return")
    for job in jobs:
        rows = meta.read_eval(job.run_dir)
        ret = rows[-1]["episode_reward"] if rows else None
        table.add_row(str(job.run_dir), job.status, f"{job.frames:,}", "-" if ret is None else f"{ret:.1f}")
    console.print(table)
    return int(any(j.status == "failed" for j in jobs))
