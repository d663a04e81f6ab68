"""Named benchmark suites: the tasks of a published protocol with their per-task settings.

``ssrl train suite=dmc100k representation=curl seeds=5`` runs every task of the suite for five seeds. A suite is
a list of tasks, each a set of overrides (``env``, ``action_repeat``, ``frames``); ``suite=path/to/file.yaml``
loads your own in the same shape::

    tasks:
      - {env: dmc/cheetah-run, action_repeat: 4}
      - {env: dmc/walker-walk, action_repeat: 2}
    frames: 100000          # default for tasks that do not set their own
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssrl.errors import ConfigError

# PlaNet / CURL protocol (CURL, Srinivas et al. 2020, Table 1): six tasks with these action repeats.
_CURL_TASKS = {"dmc/finger-spin": 2, "dmc/cartpole-swingup": 8, "dmc/reacher-easy": 4, "dmc/cheetah-run": 4,
               "dmc/walker-walk": 2, "dmc/ball_in_cup-catch": 4}
# DrQ-v2's medium and hard tasks (action repeat 2 everywhere; humanoid gets 30M frames in the paper).
_HARD_TASKS = {"dmc/quadruped-walk": 3_000_000, "dmc/quadruped-run": 3_000_000, "dmc/hopper-hop": 3_000_000,
               "dmc/humanoid-stand": 30_000_000, "dmc/humanoid-walk": 30_000_000,
               "dmc/humanoid-run": 30_000_000}
# CPU proxy of dmc100k: the same six tasks and action repeats at a budget a 2-core CPU finishes in minutes. Its
# scores are NOT comparable with the paper's 100k (docs/repro.md); `ssrl report` says so beside every table.
PROXY_SETTINGS: dict[str, Any] = {"frames": 2000, "seed_frames": 1000, "size": 64, "agent.batch_size": 32,
                                  "agent.hidden_dim": 256, "agent.update_every": 2, "replay_capacity": 10_000,
                                  "eval_every": 2000, "eval_episodes": 2}


@dataclass
class Suite:
    """A benchmark: ``tasks`` maps each env id to the overrides that task needs (``action_repeat``, ``frames``)."""

    name: str
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def overrides(self) -> list[list[str]]:
        """One ``key=value`` list per task."""
        return [[f"env={env}", *(f"{k}={v}" for k, v in opts.items())] for env, opts in self.tasks.items()]


SUITES: dict[str, Suite] = {
    "dmc100k": Suite("dmc100k", {env: {"action_repeat": ar, "frames": 100_000} for env, ar in _CURL_TASKS.items()}),
    "dmc500k": Suite("dmc500k", {env: {"action_repeat": ar, "frames": 500_000} for env, ar in _CURL_TASKS.items()}),
    "dmc100k-proxy": Suite("dmc100k-proxy", {env: {"action_repeat": ar, **PROXY_SETTINGS}
                                             for env, ar in _CURL_TASKS.items()}),
    "dmc-hard": Suite("dmc-hard", {env: {"action_repeat": 2, "frames": f} for env, f in _HARD_TASKS.items()}),
}


def load_suite(name: str) -> Suite:
    """A built-in suite by name, or a YAML file in the shape shown in this module's docstring."""
    if name in SUITES:
        return SUITES[name]
    path = Path(name)
    if path.suffix not in (".yaml", ".yml") or not path.exists():
        raise ConfigError(f"unknown suite '{name}'. Choose one of: {', '.join(SUITES)}, or give a suite .yaml file")
    data = yaml.safe_load(path.read_text()) or {}
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "env" in t for t in tasks):
        raise ConfigError(f"{path}: expected 'tasks:' as a list of mappings, each with an 'env' key")
    default = {k: v for k, v in data.items() if k not in ("tasks", "name")}
    return Suite(str(data.get("name", path.stem)),
                 {t["env"]: default | {k: v for k, v in t.items() if k != "env"} for t in tasks})
