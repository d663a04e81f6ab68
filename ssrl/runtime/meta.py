"""``meta.json`` in every run directory: what ran, where, on what, and how fast.

Written by the Trainer when a run starts (status ``started``; one entry per session, so resumes are visible)
and when it reaches its frame budget (status ``finished``, frames/s over the whole run). Multirun and sweeps
use it to skip finished runs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ssrl import files

META = "meta.json"
PACKAGES = ("ssrl", "torch", "numpy", "mujoco", "dm-control", "gymnasium", "wandb")


def git_commit(path: Path = Path(__file__).parent) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding ``path`` (the ssrl source), or None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(status.strip())}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]
        cpu = models[0] if models else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"host": socket.gethostname(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "memory_gb": round(memory / 2**30, 1) if memory else None, "gpus": gpus,
            "torch_threads": torch.get_num_threads()}


def read(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / META
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write(run_dir: Path, data: dict[str, Any]) -> None:
    files.write_text(Path(run_dir) / META, json.dumps(data, indent=2, default=str))


def start(run_dir: Path, config: dict[str, Any], frame: int) -> None:
    """Record a (new or resumed) session of the run in ``run_dir`` starting at ``frame``."""
    data = read(run_dir)
    session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_frame": frame, "command": sys.argv,
               "hardware": hardware()}
    data |= {"status": "started", "frame": frame, "config": config, "git": git_commit(),
             "packages": package_versions(), "sessions": data.get("sessions", []) + [session]}
    _write(run_dir, data)


def finish(run_dir: Path, frame: int, elapsed: float) -> None:
    """Mark the run finished at ``frame`` after ``elapsed`` seconds of training (all sessions)."""
    data = read(run_dir)
    data |= {"status": "finished", "frame": frame, "elapsed_s": round(elapsed, 2),
             "frames_per_s": round(frame / elapsed, 2) if elapsed > 0 else None}
    _write(run_dir, data)


def read_eval(run_dir: Path) -> list[dict[str, float]]:
    """Frame and return of each complete row of ``run_dir/eval.csv`` (safe while the run is writing it: a line
    still being written is left out)."""
    try:
        text = (Path(run_dir) / "eval.csv").read_text()
    except OSError:
        return []
    lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
    if len(lines) < 2:
        return []
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    return [{"frame": float(r["frame"]), "episode_reward": float(r["episode_reward"])} for r in rows]


def is_finished(run_dir: Path, frames: int) -> bool:
    """Whether the run in ``run_dir`` finished with at least ``frames`` frames."""
    data = read(run_dir)
    return data.get("status") == "finished" and int(data.get("frame", -1)) >= frames
