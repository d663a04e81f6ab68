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
from ssrl.experiments.offpolicy import BatchedTrainer

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


def test_rerun_resumes_exactly_from_the_checkpoint(tmp_path: Path) -> None:
    """4000 frames, then a rerun to 8000, equals one 8000-frame run: weights, replay, train rows (cpu backend)."""
    args = (f"train env=dmc/cartpole-balance agent=sac obs=state num_envs=4 seed_frames=800 updates_per_step=0.5 "
            f"eval_episodes=2 eval_every=100000 {TINY}").split()
    assert cli.main([*args, f"run_dir={tmp_path / 'cut'}", "frames=4000"]) == 0
    assert cli.main([*args, f"run_dir={tmp_path / 'cut'}", "frames=8000"]) == 0
    assert cli.main([*args, f"run_dir={tmp_path / 'whole'}", "frames=8000"]) == 0
    cut, whole = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("cut", "whole"))
    assert cut["counters"]["step"] == whole["counters"]["step"] == 250
    for key, value in whole["agent"]["model"].items():
        assert torch.equal(value, cut["agent"]["model"][key]), key
    finals = whole["replay"]["num_finals"]  # the side buffer's slots beyond are unused memory
    for key, value in whole["replay"].items():
        if key == "final":
            value, other = value["obs"][:finals], cut["replay"]["final"]["obs"][:finals]
        else:
            other = cut["replay"][key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
    assert torch.equal(whole["env"]["sim"], cut["env"]["sim"])
    train = [rows(tmp_path / run / "train.csv") for run in ("cut", "whole")]
    drop = {"fps", "time"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in train[0]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in train[1]]
    assert [int(r["updates"]) for r in train[1]] == [50, 62]  # 0.5 per step after 25 seed steps; credit kept


def test_env_without_batched_version_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["train", "env=gym/Hopper-v5", "agent=sac", "obs=state", "num_envs=8", f"run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "batched envs, which exist for" in err and "dmc/cheetah-run" in err and "num_envs=1" in err
    code = cli.main(["train", "env=dmc/cheetah-run", "agent=sac", "obs=pixels+state", "num_envs=8",
                     f"run_dir={tmp_path}"])
    assert code == 2 and "obs=pixels+state" in capsys.readouterr().err
    code = cli.main(["train", "env=dmc/cheetah-run", "agent=sac", "render=warp", "num_envs=8", f"run_dir={tmp_path}"])
    assert code == 2 and "backend=warp" in capsys.readouterr().err
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


def test_drqv2_trains_from_batched_pixels(tmp_path: Path) -> None:
    """Pixel stacks from the batched renderer go through the device replay into DrQ-v2's update."""
    cfg = parse_overrides(f"env=dmc/cartpole-swingup agent=drqv2 obs=pixels size=32 num_envs=2 frames=1280 "
                          f"seed_frames=640 updates_per_step=1 eval_episodes=2 agent.batch_size=8 "
                          f"agent.hidden_dim=32 encoder.num_filters=8 encoder.num_layers=2 device=cpu "
                          f"env_threads=1 progress=false run_dir={tmp_path}".split())
    trainer = BatchedTrainer(cfg)
    assert trainer.obs.dtype == torch.uint8 and trainer.obs.shape == (2, 9, 32, 32)
    trainer.train()
    (row,) = rows(tmp_path / "train.csv")
    assert int(row["updates"]) == 125 - 40 and math.isfinite(float(row["critic_loss"]))  # one chunk, 40 seed steps
    batch = trainer.replay.sample(4, 3)
    assert batch["obs"].dtype == torch.uint8 and batch["obs"].shape == (4, 9, 32, 32)
    assert batch["next_obs"].shape == (4, 9, 32, 32)
