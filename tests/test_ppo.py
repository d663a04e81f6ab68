"""PPO on batched envs: learning, GAE, gradients, representations, eval, checkpoint/resume, CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from ssrl.agents.ppo import PPO, PPOConfig, RunningMeanStd
from ssrl.cli import main
from ssrl.config import RepresentationConfig, SPRConfig, parse_overrides
from ssrl.envs.batched import make_batched
from ssrl.errors import ConfigError
from ssrl.experiments import onpolicy as ppo_run
from ssrl.experiments.onpolicy import train_ppo
from ssrl.experiments.report import find_runs

REPRESENTATIONS = ("spr", "masked", "world_model")


def rows_of(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


@pytest.mark.parametrize("representation", ["none", "world_model"])
def test_ppo_improves_return_on_cartpole_balance(tmp_path: Path, representation: str) -> None:
    torch.set_num_threads(1)
    cfg = parse_overrides(
        f"agent=ppo obs=state env=dmc/cartpole-balance num_envs=32 frames=100000 device=cpu env_threads=1 run_dir={tmp_path} "
        f"agent.num_steps=16 agent.minibatches=4 agent.epochs=8 agent.lr=2e-3 agent.hidden_dim=64 eval_every=1e6 "
        f"representation={representation}".split()
    )
    returns = [row["episode_return"] for row in train_ppo(cfg, verbose=False) if "episode_return" in row]
    assert len(returns) >= 3
    assert returns[-1] > returns[0] + 60, returns  # each entry averages 32 episodes


def representation_agent(name: str, **overrides: object) -> tuple[PPO, torch.Tensor]:
    """A PPO learner with representation `name` on 4 cheetah envs, and its next obs after one rollout."""
    torch.manual_seed(0)
    cfg = parse_overrides(f"agent=ppo obs=state representation={name}".split())
    for key, value in overrides.items():
        setattr(cfg.representation, key, value)
    env = make_batched("dmc/cheetah-run", 4, seed=0, num_threads=1)
    agent = PPO(env, PPOConfig(num_steps=8, minibatches=2, epochs=1), torch.device("cpu"), 1, cfg.encoder,
                cfg.representation)
    obs, _ = env.reset(seed=0)
    return agent, agent.collect(obs)[0]


def changed_modules(agent: PPO, step: object) -> set[str]:
    """Top-level modules of the actor-critic (`model.*`) and the representation (`repr.*`) that `step()` changed."""
    assert agent.representation is not None
    params = {f"model.{n}": p for n, p in agent.model.named_parameters()}
    params |= {f"repr.{n}": p for n, p in agent.representation.named_parameters()}
    before = {n: p.detach().clone() for n, p in params.items()}
    step()  # type: ignore[operator]
    return {".".join(n.split(".")[:2]) for n, p in params.items() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("name", REPRESENTATIONS)
def test_representation_step_trains_its_module_and_the_shared_encoder_only(name: str) -> None:
    agent, _ = representation_agent(name)
    assert agent.representation is not None and agent.model.encoders[0] is agent.model.encoders[1]
    modules = {f"repr.{n.split('.')[0]}" for n, _ in agent.representation.named_parameters()}
    changed = changed_modules(agent, lambda: agent.update_representation(agent.representation_batch(32)))
    assert changed == {"model.encoder", *modules}  # EMA targets move too; actor, critic and log std do not

    frozen, _ = representation_agent(name, trains_encoder=False)
    changed = changed_modules(frozen, lambda: frozen.update_representation(frozen.representation_batch(32)))
    assert "model.encoder" not in changed and changed


def test_ppo_update_with_a_representation_trains_everything_and_logs_its_loss() -> None:
    agent, next_obs = representation_agent("spr")
    metrics: dict[str, float] = {}
    changed = changed_modules(agent, lambda: metrics.update(agent.update(next_obs)))
    assert {"model.encoder", "model.actor", "model.critic", "model.log_std", "repr.transition"} <= changed
    assert {"policy_loss", "repr_loss", "repr_cosine_step1"} <= set(metrics) and math.isfinite(metrics["repr_loss"])


def test_representation_sequences_stay_inside_one_episode() -> None:
    env = make_batched("dmc/cartpole-balance", 3, num_threads=1)
    agent = PPO(env, PPOConfig(num_steps=6, norm_obs=False), torch.device("cpu"), 1, None, SPRConfig(k=3))
    t = torch.arange(6.0)[:, None] + 100 * torch.arange(3.0)  # obs code: 100 * env + step
    agent.obs[..., 0], agent.next_obs[..., 0] = t, t + 1
    agent.dones[1, 0] = agent.dones[3, 1] = 1.0  # env 0 ends after step 1, env 1 after step 3, env 2 runs on
    agent.next_obs[1, 0, 0] = agent.next_obs[3, 1, 0] = -1.0  # their final observations
    batch = agent.representation_batch(2000)
    codes = batch["obs"][..., 0]  # (B, 4)
    assert batch["action"].shape == (2000, 3, 1) and batch["reward"].shape == (2000, 3)
    starts = {(int(c[0]) // 100, int(c[0]) % 100) for c in codes}
    assert starts == {(0, 2), (0, 3), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)}
    inside = (codes[:, 1:] - codes[:, :-1] == 1) | (codes[:, 1:] == -1)  # consecutive steps, or the final obs
    assert inside.all() and ((codes[:, :-1] == -1).sum() == 0)
    one_step = PPO(env, PPOConfig(num_steps=6), torch.device("cpu"), 1, None, RepresentationConfig())
    assert one_step.representation is None and not hasattr(one_step, "next_obs")


@pytest.mark.parametrize("name", REPRESENTATIONS)
def test_ppo_run_logs_a_falling_representation_loss(tmp_path: Path, name: str) -> None:
    cfg = parse_overrides(f"agent=ppo obs=state env=dmc/cartpole-balance num_envs=8 frames=16384 device=cpu env_threads=1 "
                          f"agent.num_steps=16 agent.minibatches=4 representation={name} run_dir={tmp_path} "
                          "eval_episodes=2".split())  # fmt: skip
    losses = [row["repr_loss"] for row in train_ppo(cfg, verbose=False)]
    assert len(losses) == 16 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) < 0.7 * sum(losses[:4]), losses


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


def test_cli_ppo_short_run_writes_logs_evals_and_checkpoint(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["train", "agent=ppo", "obs=state", "env=dmc/reacher-easy", "num_envs=4", "frames=2048", "device=cpu", "env_threads=1",
            f"run_dir={tmp_path}", "agent.num_steps=16", "agent.minibatches=2", "eval_every=1000", "eval_episodes=3"]  # fmt: skip
    assert main(args) == 0
    rows = rows_of(tmp_path / "train.csv")
    assert rows and int(rows[-1]["frame"]) >= 2048 and "policy_loss" in rows[-1]
    evals = rows_of(tmp_path / "eval.csv")  # frame 0, then the first update at or after each eval_every frames
    assert [int(r["frame"]) for r in evals] == [0, 1024, 2048] and {"episode_reward", "episode_reward_std"} <= set(evals[0])
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["env"] == "dmc/reacher-easy" and "model" in checkpoint["agent"]
    [curve] = find_runs([tmp_path])  # `ssrl report` reads PPO runs
    assert curve.frames.tolist() == [0, 1024, 2048]
    capsys.readouterr()
    assert main(["eval", f"run_dir={tmp_path}", "episodes=1", "device=cpu", "video=true"]) == 0
    out = capsys.readouterr().out  # the policy in the run's single dm_control env, which renders
    assert "dmc/reacher-easy: mean return" in out and "over 1 episodes" in out and (tmp_path / "eval.mp4").stat().st_size
    assert main(["ppo", "num_env=4"]) == 2  # `ssrl ppo` is short for `ssrl train agent=ppo obs=state`
    assert "unknown key 'num_env'" in capsys.readouterr().err


def test_interrupted_ppo_run_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # reacher: per-env task state (targets). Episodes of 125 agent steps (action repeat 8) = 5 updates of 25
    # steps; checkpoints at updates 1, 4, 7, 10, 12. The run crashes in update 8 and resumes mid-episode from
    # update 7, after one restart (new targets), and the restart in update 10 draws from the env's RNG.
    args = ["agent=ppo", "obs=state", "env=dmc/reacher-easy", "num_envs=4", "frames=9600", "action_repeat=8",
            "device=cpu", "env_threads=1", "agent.num_steps=25", "agent.minibatches=2", "agent.epochs=1",
            "representation=world_model", "checkpoint_every=2400", "eval_every=3000", "eval_episodes=2"]
    train_ppo(parse_overrides([*args, f"run_dir={tmp_path / 'whole'}"]), verbose=False)

    collect, calls = PPO.collect, []

    def crash_in_update_8(self: PPO, obs: torch.Tensor) -> object:
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return collect(self, obs)

    monkeypatch.setattr(PPO, "collect", crash_in_update_8)
    cut = parse_overrides([*args, f"run_dir={tmp_path / 'cut'}"])
    with pytest.raises(KeyboardInterrupt):
        train_ppo(cut, verbose=False)
    assert len(rows_of(tmp_path / "cut" / "train.csv")) == 7
    monkeypatch.setattr(PPO, "collect", collect)
    resumed = train_ppo(cut, verbose=False)
    assert [row["update"] for row in resumed] == [8, 9, 10, 11, 12]

    timing = ("fps", "time")
    for log in ("train.csv", "eval.csv"):
        assert rows_of(tmp_path / "cut" / log, timing) == rows_of(tmp_path / "whole" / log, timing), log
    whole, cut_state = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("whole", "cut"))
    for part in ("model", "representation"):
        for key, value in whole["agent"][part].items():
            assert torch.equal(value, cut_state["agent"][part][key]), (part, key)
    assert torch.equal(whole["env"]["sim"], cut_state["env"]["sim"]) and torch.equal(whole["env"]["obs"], cut_state["env"]["obs"])

    changed = parse_overrides([*args, f"run_dir={tmp_path / 'cut'}", "agent.lr=1e-4"])
    with pytest.raises(ConfigError, match="agent.lr"):
        train_ppo(changed, verbose=False)
    assert ppo_run.is_ppo_run(tmp_path / "cut")


def test_ppo_config_errors_name_the_problem(tmp_path: Path) -> None:
    cases = {"obs=pixels": "obs=pixels", "representation=curl": "representation=curl",
             "representation=world_model representation.intrinsic_coef=0.1": "representation.intrinsic_coef=0.1",
             "representation=spr representation.k=40": "representation.k=40",
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
    def run(seed: int, name: str) -> list[float]:
        cfg = parse_overrides(f"agent=ppo obs=state env=dmc/walker-walk num_envs=4 frames=1024 device=cpu env_threads=1 seed={seed} "
                                  f"run_dir={tmp_path / name} agent.num_steps=16 agent.minibatches=2 eval_episodes=1".split())  # fmt: skip
        return [row["policy_loss"] for row in train_ppo(cfg, verbose=False)]

    first = run(1, "a")
    assert first and first == run(1, "b")
    assert first != run(2, "c")
    assert run(1, "a") == []  # finished: rerunning the command resumes at its end
