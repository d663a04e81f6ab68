"""Fault injection (docs/safety.md): kills at chosen and random points, two launches on one run dir, damaged run
dirs and a table of bad inputs. Every case ends in an exact resume, or in one line ``ssrl <cmd>: error: ...``
(exit 2) that changed nothing the user had."""

from __future__ import annotations

import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ssrl.cli import main
from ssrl.runtime.checkpoint import CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
# cartpole: action repeat 8, a 1000-frame episode is 125 agent steps; a checkpoint after every episode.
COMMON = ["env=dmc/cartpole-swingup", "obs=state", "seed_frames=400", "eval_every=1000", "eval_episodes=1",
          "checkpoint_every=1000", "replay_capacity=5000", "encoder.state_hidden_dim=32", "threads=1", "progress=false"]
STATE = [*COMMON, "agent.batch_size=16", "agent.hidden_dim=32"]
VARIANTS = {
    "sac": [*STATE, "frames=3000"],
    "drqv2-spr": [*STATE, "frames=3000", "agent=drqv2", "representation=spr", "representation.k=2",
                  "representation.hidden_dim=32", "representation.projection_dim=16"],
    "sac-prefetch": [*STATE, "frames=3000", "speed.prefetch=true"],
    # 4 envs x 125 vector steps x action repeat 8 = 4000 frames per row
    "batched-sac": [*STATE, "frames=8000", "num_envs=4", "env_threads=1", "eval_every=4000", "checkpoint_every=4000"],
    # 16 steps x 4 envs x 8 = 512 frames per update
    "ppo": [*COMMON, "frames=2048", "agent=ppo", "num_envs=4", "env_threads=1", "agent.num_steps=16",
            "agent.minibatches=2", "agent.hidden_dim=32", "eval_every=1024", "checkpoint_every=1024"],
}
VOLATILE = {"fps", "time"}  # wall-clock columns

# Runs `ssrl` and SIGKILLs itself inside the n-th atomic write of a file matching a pattern: the new content is
# complete in the temporary file, the rename has not happened (the worst moment for a checkpoint or replay file).
KILLER = """
import contextlib, fnmatch, os, signal, sys
from pathlib import Path
from ssrl import files
pattern, nth = sys.argv[1], int(sys.argv[2])
real, seen = files.atomic_writer, [0]
@contextlib.contextmanager
def writer(path, *args, **kwargs):
    with real(path, *args, **kwargs) as f:
        yield f
        if fnmatch.fnmatch(Path(path).name, pattern):
            seen[0] += 1
            if seen[0] == nth:
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
files.atomic_writer = writer
from ssrl.cli import main
sys.exit(main(sys.argv[3:]))
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def ssrl(args: list[str], kill_at: tuple[str, int] | None = None) -> subprocess.Popen:
    if kill_at is None:
        cmd = [sys.executable, "-m", "ssrl.cli", *args]
    else:
        cmd = [sys.executable, "-c", KILLER, kill_at[0], str(kill_at[1]), *args]
    return subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


def assert_equal(a: Any, b: Any, where: str) -> None:
    """Bit-identical nested checkpoint content (tensors, arrays, dicts, lists, scalars)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key not in ("elapsed", "config"):  # wall time; the config names the run dir
                assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(a: Path, b: Path) -> None:
    """Same CSV rows (but wall-clock columns), checkpoint (weights, optimizers, replay, env, RNG, counters) and
    episode files."""
    for name in ("train.csv", "eval.csv"):
        assert rows(a / name) == rows(b / name), name
    assert_equal(torch.load(a / CHECKPOINT, weights_only=False), torch.load(b / CHECKPOINT, weights_only=False),
                 "checkpoint")
    names = sorted(p.name for p in (a / "replay").glob("*")) if (a / "replay").exists() else []
    assert names == (sorted(p.name for p in (b / "replay").glob("*")) if (b / "replay").exists() else [])
    for name in names:
        with np.load(a / "replay" / name) as x, np.load(b / "replay" / name) as y:
            assert x.files == y.files
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}/{key}")


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    """Each variant run once, uninterrupted (lazily)."""
    cache: dict[str, Path] = {}

    class Lazy(dict):
        def __missing__(self, name: str) -> Path:
            run_dir = tmp_path_factory.mktemp(name)
            assert main(["train", *VARIANTS[name], f"run_dir={run_dir}"]) == 0
            cache[name] = run_dir
            return run_dir

    return Lazy()


# (variant, kill point): the n-th write of a file matching the pattern. The first checkpoint is written at
# frame 0, so checkpoint.pt #2 is the first one after training started.
KILLS = [
    ("sac", ("checkpoint.pt", 3)),
    ("sac", ("*.npz", 2)),
    ("drqv2-spr", ("checkpoint.pt", 2)),
    ("drqv2-spr", ("*.npz", 3)),
    ("sac-prefetch", ("*.npz", 2)),
    ("batched-sac", ("checkpoint.pt", 2)),
    ("ppo", ("checkpoint.pt", 3)),
]


@pytest.mark.parametrize("variant, kill_at", KILLS, ids=[f"{v}-{k[0]}#{k[1]}" for v, k in KILLS])
def test_sigkill_mid_write_then_resume_is_exact(variant, kill_at, references, tmp_path: Path):
    run_dir = tmp_path / "run"
    args = ["train", *VARIANTS[variant], f"run_dir={run_dir}"]
    proc = ssrl(args, kill_at)
    assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stderr.read().decode()
    assert list(run_dir.glob("**/*.tmp")), "the kill should leave the interrupted write's temporary file"
    assert main(args) == 0  # the same command resumes; the temporary file is cleared
    assert not list(run_dir.glob("**/*.tmp"))
    assert_same_run(references[variant], run_dir)


@pytest.mark.parametrize("variant", ["sac", "batched-sac", "ppo"])
def test_sigkill_at_a_random_moment_then_resume_is_exact(variant, references, tmp_path: Path):
    run_dir = tmp_path / "run"
    args = ["train", *VARIANTS[variant], f"run_dir={run_dir}"]
    proc = ssrl(args)
    deadline = time.monotonic() + 300
    while not (run_dir / CHECKPOINT).exists() and time.monotonic() < deadline:  # training has started
        time.sleep(0.05)
    time.sleep(random.Random(variant).uniform(0.5, 3.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(args) == 0
    assert_same_run(references[variant], run_dir)


# ------------------------------------------------------------------------------------------ one run dir
def test_a_second_process_on_a_run_dir_is_refused_naming_the_first(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", *STATE, "frames=100000", f"run_dir={run_dir}"]
    first = ssrl(args)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / ".lock").exists() or not (run_dir / ".lock").read_text():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"ssrl train: error: run_dir={run_dir} is in use by PID {first.pid} on " in err
        assert err.count("\n") == 1
        time.sleep(1.0)
        assert first.poll() is None  # the first run goes on
        lock = (run_dir / ".lock").read_text()
        assert lock.startswith(f"PID {first.pid} on ")  # still the first run's lock
    finally:
        first.kill()
        first.wait()


def test_a_dead_holders_lock_is_taken_over(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("PID 999999 on elsewhere since 2026-01-01 00:00:00\n")  # no flock held
    assert main(["train", *STATE, "frames=1000", f"run_dir={run_dir}"]) == 0
    assert (run_dir / CHECKPOINT).exists()


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(references) -> Path:
    return references["sac"]


def copy_of(run: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def run_again(run_dir: Path, capsys, *extra: str) -> str:
    """The run's command with 1000 more frames; asserts exit 2 and returns the one error line."""
    assert main(["train", *VARIANTS["sac"], "frames=4000", f"run_dir={run_dir}", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssrl train: error: ") and err.count("\n") == 1, err
    return err


def test_missing_checkpoint_with_data_refuses_and_deletes_nothing(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / CHECKPOINT).unlink()
    before = snapshot(run_dir)
    err = run_again(run_dir, capsys)
    assert "no checkpoint.pt" in err and "restart=true" in err and "replay episode file" in err
    assert snapshot(run_dir) == before


def test_restart_moves_the_old_run_aside(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / CHECKPOINT).unlink()
    before = snapshot(run_dir)
    assert main(["train", *STATE, "frames=1000", f"run_dir={run_dir}", "--restart"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # every file kept, byte for byte
    assert [int(r["frame"]) for r in rows(run_dir / "train.csv")] == [1000]


def test_unreadable_checkpoint_names_the_file_not_torch_advice(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / CHECKPOINT).write_bytes(b"garbage")
    before = snapshot(run_dir)
    err = run_again(run_dir, capsys)
    assert f"checkpoint {run_dir / CHECKPOINT} is unreadable" in err and "weights_only" not in err
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_damaged_replay_file_names_it_and_deletes_nothing(damage, finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    episode = sorted((run_dir / "replay").glob("*.npz"))[1]
    if damage == "corrupt":
        episode.write_bytes(episode.read_bytes()[:100])
    else:
        episode.unlink()
    before = snapshot(run_dir)
    err = run_again(run_dir, capsys)
    assert (episode.name in err if damage == "corrupt" else "episode files missing" in err) and "restart=true" in err
    assert snapshot(run_dir) == before


def test_stray_temporary_files_are_cleared_and_the_run_resumes(finished, tmp_path):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "replay" / "tmpab12cd.tmp").write_bytes(b"")  # an older ssrl's killed episode write
    (run_dir / ".train.csv.x1y2.tmp").write_bytes(b"frame,")
    assert main(["train", *VARIANTS["sac"], "frames=4000", f"run_dir={run_dir}"]) == 0
    assert not list(run_dir.rglob("*.tmp"))


@pytest.mark.parametrize("edit", ["changed", "invalid"])
def test_edited_config_yaml_is_refused_not_overwritten(edit, finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    path = run_dir / "config.yaml"
    text = path.read_text()
    path.write_text(text.replace("lr: 0.001", "lr: 0.01", 1) if edit == "changed" else text + "\n: [unbalanced\n")
    before = snapshot(run_dir)
    err = run_again(run_dir, capsys)
    assert str(path) in err and ("agent.lr" in err if edit == "changed" else "not a valid config" in err)
    assert snapshot(run_dir) == before


# ------------------------------------------------------------------------------------------ divergence
def test_exploded_loss_stops_naming_metric_frame_and_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *STATE, "frames=2000", f"run_dir={run_dir}", "guard.max_abs_loss=1e-6"]) == 2
    err = capsys.readouterr().err
    assert re.match(r"ssrl train: error: train/\w+loss is \S+ at frame [\d,]+, beyond guard.max_abs_loss=1e-06", err)
    assert f"Last good checkpoint: {run_dir / CHECKPOINT} at frame 0" in err
    assert err.count("\n") == 1


def test_nan_action_never_reaches_the_env(tmp_path, capsys, monkeypatch):
    from ssrl.agents.base import OffPolicyAgent

    monkeypatch.setattr(OffPolicyAgent, "act", lambda self, obs, frame, eval_mode: np.full(1, np.nan, np.float32))
    assert main(["train", *STATE, "frames=2000", f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "the policy's action is not finite" in err  # in the first evaluation, or the first step after the seed frames
    assert "PhysicsError" not in err and "BADCTRL" not in err


def test_ppo_nan_weights_stop_before_the_next_rollout(tmp_path, capsys, monkeypatch):
    from ssrl.agents.ppo import PPO

    real = PPO.update

    def poisoned(self, next_obs):
        metrics = real(self, next_obs)
        with torch.no_grad():
            next(self.model.parameters()).fill_(float("nan"))
        return metrics

    monkeypatch.setattr(PPO, "update", poisoned)
    assert main(["train", *VARIANTS["ppo"], f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "train/weights is nan at frame 0" in err and "Last good checkpoint" in err


# ------------------------------------------------------------------------------------------ bad inputs
ROOTLESS = os.geteuid() != 0  # root writes anywhere, so a read-only directory refuses nobody
BAD_INPUTS = [  # (command and arguments, text the error names)
    (["train", "device=foo"], "device='foo' is not a device"),
    (["train", "agent.lr=-1"], "agent.lr=-1.0: must be > 0"),
    (["train", "agent.batch_size=0"], "agent.batch_size=0: must be >= 1"),
    (["train", "replay_capacity=10"], "replay_capacity=10 holds less than one episode"),
    (["train", "representation=spr", "representation.tau=2"], "representation.tau=2.0: must be in (0, 1]"),
    (["train", "representation=curl", "obs=state", "representation.weight=-1"], "representation.weight=-1.0"),
    (["train", "agent=drqv2", "agent.discount=1.5"], "agent.discount=1.5"),
    (["ppo", "agent.gae_lambda=2", "num_envs=2"], "agent.gae_lambda=2.0"),
    (["ppo", "device=cuda:7", "num_envs=2"], "device=cuda:7"),
    (["train", "frames=0"], "frames=0: must be positive"),
    (["train", "env=dmc/nope-nope"], "env: Unknown env id"),
    (["train", "agent.nope=1"], "unknown key 'agent.nope'"),
    (["train", "guard.check_every=0"], "guard.check_every=0: must be >= 1"),
    (["train", "encoder.freeze=true"], "encoder.freeze=true needs a pretrained backbone"),
    (["train", "agent=sac", "num_envs=2", "env=gym/Hopper-v5"], "num_envs=2 runs batched envs"),
    (["eval", "episodes=abc"], "episodes='abc' is not an integer"),
    (["eval", "episodes=0"], "episodes=0: must be at least 1"),
    (["pretrain", "data=nowhere", "steps=50", "warmup=60"], "warmup=60: must be in [0, steps=50)"),
    (["pretrain", "data=nowhere", "steps=50"], "nowhere"),
    (["pretrain", "data=nowhere", "representation.lr=0"], "representation.lr=0.0: must be > 0"),
]
if ROOTLESS:
    BAD_INPUTS.append((["train", "run_dir=/proc/ssrl-test/run"], "no write permission"))
if not torch.cuda.is_available():
    BAD_INPUTS.append((["train", "device=cuda"], "device=cuda: this machine has no CUDA GPU"))


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command, *args = argv
    run_dir = tmp_path / "run"
    if command == "train":
        args = [*STATE, "frames=1000", f"run_dir={run_dir}", *args]
    elif command == "ppo":
        args = [*COMMON, "frames=1000", f"run_dir={run_dir}", *args]
    elif command == "eval":
        args = [f"run_dir={run_dir}", *args]
    elif command == "pretrain":
        args = [f"out={run_dir}", *args]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ssrl {command}: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not run_dir.exists() and list(tmp_path.iterdir()) == []  # nothing created, not even runs/


def test_run_dir_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "taken"
    path.write_text("mine")
    assert main(["train", *STATE, f"run_dir={path}"]) == 2
    assert f"run_dir={path} is a file" in capsys.readouterr().err
    assert path.read_text() == "mine"


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="agent.lr=-1.0"):
        main(["train", *STATE, f"run_dir={tmp_path / 'run'}", "agent.lr=-1", "--debug"])


def test_guard_on_a_gpu_checks_every_n_updates_and_names_the_first_bad_one():
    from ssrl.config import GuardConfig
    from ssrl.errors import DivergenceError
    from ssrl.runtime.guard import Guard

    guard = Guard(GuardConfig(max_abs_loss=100.0, check_every=3), torch.device("cpu"))
    guard.every = 3  # what a CUDA device gets: one sync per 3 updates
    guard.metrics({"critic_loss": torch.tensor(1.0), "q": torch.tensor(5.0)}, frame=10)
    guard.metrics({"critic_loss": torch.tensor(float("inf")), "q": torch.tensor(float("nan"))}, frame=20)  # deferred
    with pytest.raises(DivergenceError, match="train/critic_loss is inf at frame 20"):
        guard.metrics({"critic_loss": torch.tensor(2.0)}, frame=30)  # the 3rd pending update: one look at all
    guard.metrics({"actor_loss": 101.0, "q": 1e6}, frame=60)  # only losses are bounded
    with pytest.raises(DivergenceError, match=r"train/actor_loss is 101 at frame 60, beyond guard.max_abs_loss=100"):
        guard.flush()
    with pytest.raises(DivergenceError, match="action is not finite at frame 70"):
        Guard(GuardConfig(), torch.device("cpu")).action(np.array([0.0, np.inf]), 70)
