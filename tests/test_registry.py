"""The one registry: an objective defined outside the package (here, in this test file) registers with one call
and then trains through every public path — ``key=value`` overrides, ``ssrl config``, ``make_agent`` and
``ssrl train`` — exactly as docs/architecture.md tells a contributor."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssrl import config as config_lib
from ssrl.agents import make_agent
from ssrl.cli import main
from ssrl.config import RepresentationConfig, register_representation
from ssrl.data import ReplayBuffer, to_torch
from ssrl.errors import ConfigError
from ssrl.representations.base import Representation


@dataclass
class RewardConfig(RepresentationConfig):
    """Predict the reward from the features (a toy objective)."""

    name: str = "reward_toy"
    hidden_dim: int = 16


class RewardToy(Representation):
    """Regresses each transition's reward on the encoder's features of its observation."""

    def __init__(self, encoder: nn.Module, obs_space: gym.Space, action_space: gym.spaces.Box,
                 cfg: RewardConfig) -> None:
        super().__init__(encoder, obs_space, action_space, cfg)
        self.head = nn.Sequential(nn.Linear(encoder.features_dim, cfg.hidden_dim), nn.ReLU(),
                                  nn.Linear(cfg.hidden_dim, 1))

    def loss(self, batch, encoder, augment):
        prediction = self.head(encoder(augment(batch["obs"]))).squeeze(-1)
        return F.mse_loss(prediction, batch["reward"]), {}


@pytest.fixture(autouse=True, scope="module")
def toy():
    register_representation("reward_toy", RewardConfig, RewardToy)
    yield
    del config_lib.REPRESENTATIONS["reward_toy"]


def _space() -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)


def test_toy_objective_trains_the_shared_encoder():
    cfg = config_lib.parse_overrides(["obs=state", "representation=reward_toy", "representation.hidden_dim=8",
                                      "agent.hidden_dim=32", "agent.batch_size=16"])
    assert isinstance(cfg.representation, RewardConfig) and cfg.representation.hidden_dim == 8
    actions = gym.spaces.Box(-1, 1, (2,), np.float32)
    agent = make_agent(cfg, _space(), actions, torch.device("cpu"))
    assert isinstance(agent.representation, RewardToy)
    replay = ReplayBuffer(_space(), actions, 200, frame_stack=1, seed=0)
    rng = np.random.default_rng(0)
    replay.add_first(rng.normal(size=5).astype(np.float32))
    for t in range(100):
        replay.add(rng.uniform(-1, 1, 2).astype(np.float32), float(rng.normal()), rng.normal(size=5).astype(np.float32),
                   False, t % 25 == 24)
        if t % 25 == 24:
            replay.add_first(rng.normal(size=5).astype(np.float32))
    # The toy loss alone reaches the encoder (the module's loss trains the shared encoder when trains_encoder).
    batch = to_torch(replay.sample(16), "cpu")
    loss, _ = agent.representation.loss(batch, agent.encoder, agent.augment)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.encoder.parameters())
    agent.zero_grad(set_to_none=True)
    head_before = [p.detach().clone() for p in agent.representation.head.parameters()]
    for _ in range(3):
        metrics = agent.update(replay, frame=0)
    assert torch.isfinite(metrics["repr_loss"])
    assert all(not torch.equal(a, b) for a, b in zip(head_before, agent.representation.head.parameters()))


def test_toy_objective_in_ssrl_config_and_train(tmp_path, capsys):
    assert main(["config", "representation=reward_toy", "representation.hidden_dim=4"]) == 0
    out = capsys.readouterr().out
    assert "name: reward_toy" in out and "hidden_dim: 4" in out
    run = tmp_path / "run"
    assert main(["train", "env=dmc/cartpole-balance", "obs=state", "representation=reward_toy", "frames=1000",
                 "seed_frames=200", "agent.hidden_dim=32", "agent.batch_size=16", "encoder.state_hidden_dim=32",
                 "eval_every=1000", "eval_episodes=1", "progress=false", f"run_dir={run}"]) == 0
    with open(run / "train.csv") as f:
        row = next(csv.DictReader(f))
    assert np.isfinite(float(row["repr_loss"]))


def test_unknown_and_malformed_registrations():
    with pytest.raises(ConfigError, match="reward_toy"):
        config_lib.parse_overrides(["representation=reward_tyo"])  # close match suggested
    with pytest.raises(ValueError, match="name"):
        register_representation("other_name", RewardConfig, RewardToy)  # its config says name=reward_toy
    with pytest.raises(TypeError, match="RepresentationConfig"):
        register_representation("plain", dataclass(type("Plain", (), {"__annotations__": {"name": str},
                                                                        "name": "plain"})), RewardToy)
