"""End-to-end `ssrl train` / `ssrl eval`: run directories, exact resume (also after SIGKILL), clear errors."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssrl.cli import main
from ssrl.config import parse_overrides
from ssrl.errors import CheckpointError, ConfigError
from ssrl.experiments.offpolicy import Trainer
from ssrl.runtime.checkpoint import CHECKPOINT

# cartpole: action repeat 8, so one 1000-frame episode is 125 agent steps; a checkpoint after every episode.
TINY = ["env=dmc/cartpole-swingup", "size=32", "seed_frames=400", "eval_every=1000", "eval_episodes=1",
        "checkpoint_every=1000", "replay_capacity=5000", "agent.batch_size=16", "agent.hidden_dim=32",
        "encoder.num_filters=8", "encoder.num_layers=2", "threads=1", "progress=false"]
VOLATILE = {"fps", "time"}  # wall-clock columns


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in csv.DictReader(f)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / CHECKPOINT, weights_only=True)["agent"]["model"]


def train(run_dir: Path, *extra: str) -> dict[str, float]:
    return Trainer(parse_overrides([*TINY, f"run_dir={run_dir}", *extra])).train()


def assert_same_run(a: Path, b: Path) -> None:
    for name in ("train.csv", "eval.csv"):
        assert rows(a / name) == rows(b / name), name
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)
    assert sorted(p.name for p in (a / "replay").iterdir()) == sorted(p.name for p in (b / "replay").iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 3000-frame run."""
    run_dir = tmp_path_factory.mktemp("reference")
    train(run_dir, "frames=3000")
    return run_dir


def test_run_directory_contents(reference: Path):
    assert {"config.yaml", "train.csv", "eval.csv", CHECKPOINT, "replay"} <= {p.name for p in reference.iterdir()}
    train_rows, eval_rows = rows(reference / "train.csv"), rows(reference / "eval.csv")
    assert [int(r["frame"]) for r in train_rows] == [1000, 2000, 3000]  # frames count action repeats
    assert [int(r["frame"]) for r in eval_rows] == [0, 1000, 2000, 3000]
    assert {"episode", "episode_reward", "critic_loss", "actor_loss", "alpha"} <= train_rows[-1].keys()
    assert len(list((reference / "replay").iterdir())) == 3  # one file per finished episode
    state = torch.load(reference / CHECKPOINT, weights_only=True)
    assert state["counters"]["step"] == 375 and set(state["agent"]["optim"]) == {"critic", "actor", "alpha"}


def test_the_final_policy_is_evaluated_when_the_budget_ends_between_evals(tmp_path: Path):
    train(tmp_path, "obs=state", "frames=3000", "eval_every=1500")  # evals due at 0 and 1500 (reached at 2000)
    assert [int(r["frame"]) for r in rows(tmp_path / "eval.csv")] == [0, 2000, 3000]
    for every in ("1500", "2500"):  # rerunning the finished run (eval_every may change on resume) evaluates nothing
        train(tmp_path, "obs=state", "frames=3000", f"eval_every={every}")
    assert [int(r["frame"]) for r in rows(tmp_path / "eval.csv")] == [0, 2000, 3000]
    train(tmp_path / "long", "obs=state", "frames=1000", "eval_every=100000")
    assert [int(r["frame"]) for r in rows(tmp_path / "long" / "eval.csv")] == [0, 1000]


def test_resume_continues_exactly(reference: Path, tmp_path: Path):
    train(tmp_path, "frames=1000")
    assert int(rows(tmp_path / "train.csv")[-1]["frame"]) == 1000
    train(tmp_path, "frames=3000")  # same command with a larger budget resumes
    assert_same_run(reference, tmp_path)


def test_sigkill_loses_only_frames_since_last_checkpoint(reference: Path, tmp_path: Path):
    cmd = [sys.executable, "-m", "ssrl.cli", "train", *TINY, "frames=3000", f"run_dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def checkpointed_steps() -> int:
        try:
            return torch.load(tmp_path / CHECKPOINT, weights_only=True)["counters"]["step"]
        except (FileNotFoundError, RuntimeError, EOFError):  # not written yet
            return 0

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and checkpointed_steps() < 250:
        time.sleep(0.05)  # wait for the checkpoint after the 2nd episode
    time.sleep(0.3)  # let it get some way into episode 3 (acting, updating, writing replay)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpointed_steps() == 250  # the kill lost only the episode that was running
    assert main(["train", *TINY, "frames=3000", f"run_dir={tmp_path}"]) == 0
    assert_same_run(reference, tmp_path)


def test_drqv2_and_state_observations_train(tmp_path: Path):
    last = train(tmp_path / "drqv2", "agent=drqv2", "frames=2000", "agent.stddev_schedule=linear(1.0,0.1,2000)")
    assert last["frame"] == 2000
    header = rows(tmp_path / "drqv2" / "train.csv")[-1]
    assert {"critic_loss", "actor_loss", "stddev"} <= header.keys()
    last = train(tmp_path / "state", "obs=state", "frames=2000")
    assert last["frame"] == 2000


def test_changed_config_refuses_to_resume(reference: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    with pytest.raises(ConfigError, match=r"different config \(agent.lr: 0.001 -> 0.01\)"):
        train(run_dir, "frames=4000", "agent.lr=0.01")


def test_corrupt_checkpoint_is_reported_and_nothing_is_lost(reference: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    ckpt = run_dir / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} is unreadable"):
        train(run_dir, "frames=4000")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert len(list((run_dir / "replay").iterdir())) == 3


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch):
    train(tmp_path, "frames=1000")
    good = (tmp_path / CHECKPOINT).read_bytes()
    from ssrl.agents.base import OffPolicyAgent

    real = OffPolicyAgent.update_critic

    def diverging(self, *args, **kwargs):
        metrics = real(self, *args, **kwargs)
        return metrics | {"critic_loss": torch.tensor(float("nan"))}

    monkeypatch.setattr(OffPolicyAgent, "update_critic", diverging)
    with pytest.raises(FloatingPointError, match="train/critic_loss is nan at frame 1,000: .* Last good checkpoint: "
                                                 ".* at frame 1,000"):
        train(tmp_path, "frames=3000")
    assert (tmp_path / CHECKPOINT).read_bytes() == good
    assert [int(r["frame"]) for r in rows(tmp_path / "train.csv")] == [1000]


@pytest.mark.parametrize("args, message", [
    (["agent.lrr=1"], "unknown key 'agent.lrr'"),
    (["env=dmc/cartpole-swingupp"], "close matches: dmc/cartpole-swingup"),
    (["representation=nope"], "unknown representation 'nope'"),
])
def test_cli_errors_name_the_problem_before_any_work(tmp_path: Path, capsys, args, message):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, f"run_dir={run_dir}", *args]) == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()


def test_eval_writes_video(reference: Path, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    assert main(["eval", f"run_dir={run_dir}", "episodes=1", "video=true"]) == 0
    assert "mean return" in capsys.readouterr().out
    assert (run_dir / "eval.mp4").stat().st_size > 1000
    assert main(["eval", f"run_dir={tmp_path / 'missing'}"]) == 2
    assert "not found" in capsys.readouterr().err


def test_wandb_offline_changes_nothing_else(tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train(tmp_path / "plain", "frames=1000")
    train(tmp_path / "wandb", "frames=1000", "wandb=true", "wandb_mode=offline")
    assert list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert rows(tmp_path / "plain" / "train.csv") == rows(tmp_path / "wandb" / "train.csv")
    assert rows(tmp_path / "plain" / "eval.csv") == rows(tmp_path / "wandb" / "eval.csv")
