"""PPO maths against plain loops and hand formulas: GAE(lambda) over a scripted rollout with terminations,
truncations (bootstrapped from V of the final observation; a step both terminated and truncated is terminal) and
the rollout's cut (bootstrapped from V of the next observation), for gamma in {0.9, 0.99, 1} x lambda in
{0, 0.95, 1}; the clipped surrogate, the (clipped) value loss and the entropy of one update step on fixed tensors
with known ratios."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.agents.ppo import PPO
from ssrl.config import EncoderConfig, PPOConfig

T, N, OBS_DIM, ACT_DIM = 7, 3, 4, 2
SMALL = EncoderConfig(feature_dim=8, state_hidden_dim=16)


class ScriptedEnv:
    """A batched env that ignores actions and replays a fixed script: observations, rewards, ends and the final
    observations of the episodes that end (same-step autoreset: the returned obs is then the next episode's)."""

    num_envs = N
    single_observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    single_action_space = gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32)

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.obs = torch.randn(T + 1, N, OBS_DIM, generator=g)
        self.final = torch.randn(T, N, OBS_DIM, generator=g) * 2
        self.reward = torch.randn(T, N, generator=g)
        self.terminated = torch.zeros(T, N, dtype=torch.bool)
        self.truncated = torch.zeros(T, N, dtype=torch.bool)
        self.terminated[1, 0] = self.terminated[4, 2] = self.terminated[T - 1, 1] = True
        self.truncated[3, 0] = self.truncated[2, 1] = self.truncated[T - 1, 2] = True
        # a time limit reached on the step that terminates (Gymnasium's TimeLimit reports both): terminal
        self.terminated[5, 1] = self.truncated[5, 1] = True
        self.t = 0

    def step(self, action):
        t = self.t
        self.t += 1
        return (self.obs[t + 1], self.reward[t], self.terminated[t], self.truncated[t],
                {"final_obs": self.final[t]})


def ppo(env, **cfg):
    torch.manual_seed(0)
    config = PPOConfig(num_steps=T, norm_obs=False, norm_reward=False, hidden_dim=16, **cfg)
    return PPO(env, config, torch.device("cpu"), total_updates=1, encoder_cfg=SMALL)


def gae_loop(rewards, values, next_values, terminated, truncated, final_values, gamma, lam):
    """Plain GAE for one env: delta_t = r_t + gamma * V(s') - V(s_t), with s' the next observation, the final
    observation when the episode was truncated, and no bootstrap when it terminated; the trace stops at an end."""
    n = len(rewards)
    adv = [0.0] * n
    running = 0.0
    for t in reversed(range(n)):
        if terminated[t]:
            delta, running = rewards[t] - values[t], 0.0
        elif truncated[t]:
            delta, running = rewards[t] + gamma * final_values[t] - values[t], 0.0
        else:
            delta = rewards[t] + gamma * next_values[t] - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv


@pytest.mark.parametrize("gamma", [0.9, 0.99, 1.0])
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_matches_a_plain_loop_with_terminations_and_truncation_bootstrap(gamma, lam):
    env = ScriptedEnv()
    agent = ppo(env, gamma=gamma, gae_lambda=lam)
    next_obs, _ = agent.collect(env.obs[0])
    torch.testing.assert_close(next_obs, env.obs[T])
    advantages, returns = agent.advantages(next_obs)
    with torch.no_grad():
        v = agent.model.value(env.obs.flatten(0, 1)).view(T + 1, N)  # V(obs_0..obs_T) from the critic
        v_final = agent.model.value(env.final.flatten(0, 1)).view(T, N)
    assert v.abs().min() > 1e-4  # non-zero values, so a wrong index shows
    for e in range(N):
        expected = gae_loop(env.reward[:, e].tolist(), v[:T, e].tolist(), v[1:, e].tolist(),
                            env.terminated[:, e].tolist(), env.truncated[:, e].tolist(), v_final[:, e].tolist(),
                            gamma, lam)
        torch.testing.assert_close(advantages[:, e], torch.tensor(expected), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(returns[:, e], torch.tensor(expected) + v[:T, e], rtol=1e-5, atol=1e-5)


def test_gae_hand_values_lambda_zero_is_the_one_step_td_error():
    env = ScriptedEnv()
    agent = ppo(env, gamma=0.5, gae_lambda=0.0)
    agent.collect(env.obs[0])
    agent.values.copy_(torch.arange(T * N, dtype=torch.float32).view(T, N) / 10)
    agent.rewards.fill_(1.0)
    agent.dones.zero_()
    agent.dones[2, 0] = 1.0
    with torch.no_grad():
        v_next = agent.model.value(env.obs[T])
    advantages, _ = agent.advantages(env.obs[T])
    # env 0: A_t = 1 + 0.5 * V_{t+1} - V_t, A_2 = 1 - V_2 (episode ends), A_{T-1} bootstraps from V(next_obs)
    v = agent.values[:, 0]
    assert float(advantages[0, 0]) == pytest.approx(1 + 0.5 * float(v[1]) - float(v[0]))
    assert float(advantages[2, 0]) == pytest.approx(1 - float(v[2]))
    assert float(advantages[T - 1, 0]) == pytest.approx(1 + 0.5 * float(v_next[0]) - float(v[T - 1]), rel=1e-6)


# ---------------------------------------------------------------------------------------------- update step
def fixed_minibatch(agent, ratio, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = len(ratio)
    obs = torch.randn(m, OBS_DIM, generator=g)
    actions = torch.randn(m, ACT_DIM, generator=g) * 0.5
    with torch.no_grad():
        mean = agent.model.actor(agent.model.encoders[0](obs))
        std = agent.model.log_std.exp()
        log_prob = torch.distributions.Normal(mean, std).log_prob(actions).sum(-1)
        value = agent.model.value(obs)
    return {"obs": obs, "actions": actions, "log_probs": log_prob - torch.log(ratio),  # so that pi/pi_old = ratio
            "advantages": torch.randn(m, generator=g) * 3 + 1, "returns": value + torch.randn(m, generator=g),
            "values": value + torch.randn(m, generator=g) * 0.5}, value, std


@pytest.mark.parametrize("clip_value", [0.0, 0.2])
def test_update_step_clipped_surrogate_value_loss_and_entropy_by_hand(clip_value):
    agent = ppo(ScriptedEnv(), clip=0.2, clip_value=clip_value)
    ratio = torch.linspace(0.5, 1.5, 32)
    mb, value, std = fixed_minibatch(agent, ratio)
    metrics = agent.update_step({k: v.clone() for k, v in mb.items()})

    a = mb["advantages"]
    a = (a - a.mean()) / (a.std() + 1e-8)  # per-minibatch normalisation (CleanRL)
    # PPO's L^CLIP = E[min(r A, clip(r, 1-eps, 1+eps) A)], maximised: the loss is its negative
    surrogate = [min(float(r) * float(x), min(max(float(r), 0.8), 1.2) * float(x)) for r, x in zip(ratio, a)]
    assert metrics["policy_loss"] == pytest.approx(-sum(surrogate) / len(surrogate), rel=1e-5, abs=1e-6)

    losses = []
    for v, v_old, ret in zip(value.tolist(), mb["values"].tolist(), mb["returns"].tolist()):
        loss = (v - ret) ** 2
        if clip_value > 0:
            clipped = v_old + min(max(v - v_old, -clip_value), clip_value)
            loss = max(loss, (clipped - ret) ** 2)
        losses.append(loss)
    assert metrics["value_loss"] == pytest.approx(0.5 * sum(losses) / len(losses), rel=1e-5)

    entropy = sum(0.5 * math.log(2 * math.pi * math.e * float(s) ** 2) for s in std)
    assert metrics["entropy"] == pytest.approx(entropy, rel=1e-5)
    clipped_fraction = sum(abs(float(r) - 1) > 0.2 for r in ratio) / len(ratio)
    assert metrics["clip_fraction"] == pytest.approx(clipped_fraction)
    if clip_value > 0:  # the case exercises both branches of the value max
        unclipped = ((value - mb["returns"]) ** 2).mean()
        assert 0.5 * float(unclipped) != pytest.approx(metrics["value_loss"], rel=1e-3)


def test_clipped_surrogate_hand_numbers():
    """Four rows, eps = 0.2, advantages +-1 after normalisation: r=1.5, A>0 is capped at 1.2; r=0.5, A<0 is capped
    at 0.8 (pessimistic bound); r=0.5, A>0 and r=1.5, A<0 keep the unclipped, lower value."""
    agent = ppo(ScriptedEnv(), clip=0.2)
    ratio = torch.tensor([1.5, 0.5, 0.5, 1.5])
    mb, _, _ = fixed_minibatch(agent, ratio)
    mb["advantages"] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # mean 0, std (unbiased) 2/sqrt(3)
    scale = math.sqrt(3) / 2
    objective = [1.2 * scale, -0.8 * scale, 0.5 * scale, -1.5 * scale]
    metrics = agent.update_step(mb)
    assert metrics["policy_loss"] == pytest.approx(-sum(objective) / 4, rel=1e-5)
