"""PPO on batched envs: learning, GAE, gradients, CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ssrl.agents.ppo import PPO, PPOConfig, RunningMeanStd
from ssrl.cli import main
from ssrl.config import parse_overrides
from ssrl.envs.batched import make_batched
from ssrl.errors import ConfigError
from ssrl.experiments.ppo import train_ppo


def test_ppo_improves_return_on_cartpole_balance(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = parse_overrides(
        f"agent=ppo obs=state env=dmc/cartpole-balance num_envs=32 frames=100000 device=cpu env_threads=1 run_dir={tmp_path} "
        "agent.num_steps=16 agent.minibatches=4 agent.epochs=8 agent.lr=2e-3 agent.hidden_dim=64".split()
    )
    returns = [row["episode_return"] for row in train_ppo(cfg, verbose=False) if "episode_return" in row]
    assert len(returns) >= 3
    assert returns[-1] > returns[0] + 60, returns  # each entry averages 32 episodes


def test_gae_and_returns_on_a_hand_computed_rollout() -> None:
    env = make_batched("dmc/cartpole-balance", 1, num_threads=1)
    cfg = PPOConfig(num_steps=3, gamma=0.5, gae_lambda=1.0)
    agent = PPO(env, cfg, torch.device("cpu"), total_updates=1)
    agent.rewards[:, 0] = torch.tensor([1.0, 2.0, 4.0])
    agent.values.zero_()
    agent.dones[:, 0] = torch.tensor([0.0, 1.0, 0.0])  # the episode ends after step 1
    for p in agent.model.critic.parameters():
        torch.nn.init.zeros_(p)  # V(next_obs) = 0
    advantages, returns = agent.advantages(torch.zeros(1, 5))
    torch.testing.assert_close(advantages[:, 0], torch.tensor([1 + 0.5 * 2, 2.0, 4.0]))
    torch.testing.assert_close(returns, advantages)


def test_update_trains_both_encoders_and_the_log_std() -> None:
    torch.manual_seed(0)
    env = make_batched("dmc/cheetah-run", 4, seed=0, num_threads=1)
    agent = PPO(env, PPOConfig(num_steps=8, minibatches=2, epochs=1), torch.device("cpu"), total_updates=1)
    before = {name: p.detach().clone() for name, p in agent.model.named_parameters()}
    obs, _ = env.reset(seed=0)
    next_obs, _ = agent.collect(obs)
    metrics = agent.update(next_obs)
    assert set(metrics) == {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"}
    changed = {name.split(".")[0] for name, p in agent.model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"actor_encoder", "critic_encoder", "actor", "critic", "log_std"}
    assert agent.model.obs_rms.count > 32  # statistics updated from the rollout


def test_running_mean_std_matches_the_whole_batch() -> None:
    data = torch.randn(1000, 3, dtype=torch.float64) * 3 + 1
    rms = RunningMeanStd((3,))
    for chunk in data.split(100):
        rms.update(chunk)
    torch.testing.assert_close(rms.mean, data.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(rms.var, data.var(0, unbiased=False), atol=1e-5, rtol=1e-5)


def test_cli_ppo_short_run_writes_logs_and_checkpoint(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["train", "agent=ppo", "obs=state", "env=dmc/reacher-easy", "num_envs=4", "frames=2048", "device=cpu", "env_threads=1",
            f"run_dir={tmp_path}", "agent.num_steps=16", "agent.minibatches=2"]  # fmt: skip
    assert main(args) == 0
    with (tmp_path / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["frame"]) >= 2048 and "policy_loss" in rows[-1]
    checkpoint = torch.load(tmp_path / "ppo.pt", weights_only=False)
    assert checkpoint["config"]["env"] == "dmc/reacher-easy" and "model" in checkpoint
    assert main(["ppo", "num_env=4"]) == 2  # `ssrl ppo` is short for `ssrl train agent=ppo obs=state`
    assert "unknown key 'num_env'" in capsys.readouterr().err


def test_ppo_config_errors_name_the_problem(tmp_path: Path) -> None:
    cases = {"obs=pixels": "obs=pixels", "representation=curl": "representation=curl",
             "num_envs=2 agent.num_steps=2 agent.minibatches=8": "agent.minibatches=8",
             "agent.epochs=0": "agent.epochs=0", "backend=jax": "backend='jax'"}  # fmt: skip
    for overrides, message in cases.items():
        try:
            parse_overrides(f"agent=ppo obs=state {overrides}".split())
        except ConfigError as e:
            assert message in str(e), (overrides, e)
        else:
            raise AssertionError(f"{overrides} was accepted")
    cfg = parse_overrides(f"agent=ppo obs=state env=dmc/acrobot-swingup run_dir={tmp_path / 'run'}".split())
    try:
        train_ppo(cfg, verbose=False)
    except ConfigError as e:
        assert "dmc/acrobot-swingup" in str(e) and "dmc/cheetah-run" in str(e)  # names the batched tasks
    else:
        raise AssertionError("an env without a batched version was accepted")
    assert not (tmp_path / "run").exists()


def test_ppo_runs_are_reproducible_with_a_seed(tmp_path: Path) -> None:
    def run(seed: int) -> list[float]:
        cfg = parse_overrides(f"agent=ppo obs=state env=dmc/walker-walk num_envs=4 frames=1024 device=cpu env_threads=1 seed={seed} "
                                  f"run_dir={tmp_path / str(seed)} agent.num_steps=16 agent.minibatches=2".split())  # fmt: skip
        return [row["policy_loss"] for row in train_ppo(cfg, verbose=False)]

    assert run(1) == run(1)
    assert run(1) != run(2)
