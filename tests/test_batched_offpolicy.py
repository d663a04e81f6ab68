"""SAC/DrQ-v2 on batched envs with the device replay: learning, representations, resume, errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl import cli
from ssrl.agents import make_agent
from ssrl.config import parse_overrides
from ssrl.experiments.batched import BatchedTrainer

TINY = "device=cpu env_threads=1 progress=false agent.batch_size=32 agent.hidden_dim=64 encoder.state_hidden_dim=64"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_sac_improves_on_cartpole_balance_with_8_envs(tmp_path: Path) -> None:
    """3 chunks of 125 vector steps x 8 envs (24k frames, 1.4k updates): about 40 s on 2 busy cores."""
    cfg = parse_overrides(f"env=dmc/cartpole-balance agent=sac obs=state num_envs=8 frames=24000 seed_frames=2000 "
                          f"eval_every=8000 eval_episodes=8 agent.batch_size=128 agent.hidden_dim=256 "
                          f"updates_per_step=4 device=cpu env_threads=1 progress=false run_dir={tmp_path}".split())
    BatchedTrainer(cfg).train()
    evals = [float(r["episode_reward"]) for r in rows(tmp_path / "eval.csv")]
    train = rows(tmp_path / "train.csv")
    assert [int(r["frame"]) for r in train] == [8000, 16000, 24000]  # frames = steps x action repeat 8 x 8 envs
    assert [int(r["episode"]) for r in train] == [8, 16, 24]
    assert evals[-1] > evals[0] + 100 and evals[-1] > 400, evals  # tuning run: 304 -> 408 -> 532 -> 567


@pytest.mark.parametrize("agent,representation", [("sac", "world_model"), ("drqv2", "masked")])
def test_representation_loss_is_logged_and_finite(tmp_path: Path, agent: str, representation: str) -> None:
    cfg = parse_overrides(f"env=dmc/cartpole-balance agent={agent} representation={representation} obs=state "
                          f"num_envs=4 frames=4000 seed_frames=2400 updates_per_step=1 eval_episodes=2 {TINY} "
                          f"run_dir={tmp_path}".split())
    BatchedTrainer(cfg).train()
    (row,) = rows(tmp_path / "train.csv")
    assert int(row["updates"]) == 125 - math.ceil(2400 / 32)  # one update per vector step after the seed steps
    assert math.isfinite(float(row["repr_loss"])) and math.isfinite(float(row["critic_loss"]))


def test_rerun_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    args = (f"train env=dmc/cartpole-balance agent=sac obs=state num_envs=4 seed_frames=800 updates_per_step=0.5 "
            f"eval_episodes=2 eval_every=100000 {TINY} run_dir={tmp_path}").split()
    assert cli.main([*args, "frames=4000"]) == 0
    first = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert cli.main([*args, "frames=8000"]) == 0
    second = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    train = rows(tmp_path / "train.csv")
    assert [int(r["frame"]) for r in train] == [4000, 8000]
    assert second["counters"]["step"] == 250 and second["replay"]["next"] == 250
    # the first chunk's transitions are kept, and its last step became a truncation before the envs restarted
    assert torch.equal(second["replay"]["reward"][:125], first["replay"]["reward"])
    assert bool(second["replay"]["done"][124].all()) and not bool(second["replay"]["term"][124].any())
    updates = [int(r["updates"]) for r in train]
    assert int(second["agent"]["model"]["num_updates"]) == sum(updates) == 50 + 62  # 0.5 per step after 25 seed steps; credit kept


def test_env_without_batched_version_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["train", "env=gym/Hopper-v5", "agent=sac", "obs=state", "num_envs=8", f"run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "batched envs, which exist for" in err and "dmc/cheetah-run" in err and "num_envs=1" in err
    code = cli.main(["train", "env=dmc/cheetah-run", "agent=sac", "obs=pixels", "num_envs=8", f"run_dir={tmp_path}"])
    assert code == 2 and "set obs=state" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("agent", ["sac", "drqv2"])
def test_batched_actions_match_single_observation_actions(agent: str) -> None:
    cfg = parse_overrides(f"agent={agent} obs=state".split())
    space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    model = make_agent(cfg, space, gym.spaces.Box(-1, 1, (2,), np.float32), torch.device("cpu"))
    obs = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    batch = model.act_batch(torch.as_tensor(obs), 0, eval_mode=True)
    assert batch.shape == (6, 2)
    for i in range(6):
        np.testing.assert_allclose(model.act(obs[i], 0, eval_mode=True), batch[i].numpy(), atol=1e-6)
