"""Off-policy agent maths against hand formulas and torch.distributions: SAC's and DrQ-v2's critic targets on real
n-step replay batches (terminal: no bootstrap, truncated: bootstrap), DrQ-v2's noise schedule, the tanh-Gaussian
log-prob and entropy, the temperature loss and target entropy, which updates reach the encoder, and the EMA
target step. Network outputs are taken from the agent's networks (called by the test); every formula on top of
them is written here."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, TanhTransform, TransformedDistribution

from ssrl.agents import make_agent
from ssrl.config import parse_overrides
from ssrl.data import ReplayBuffer, to_torch

STATE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACTIONS = gym.spaces.Box(-1, 1, (2,), np.float32)
GAMMA, N_STEP = 0.9, 3


def build(agent="sac", action_space=ACTIONS, *extra):
    cfg = parse_overrides([f"agent={agent}", "agent.hidden_dim=32", "agent.batch_size=64", "agent.augmentation=none",
                           f"agent.n_step={N_STEP}", "encoder.state_hidden_dim=32", "encoder.feature_dim=16", *extra])
    torch.manual_seed(0)
    return make_agent(cfg, STATE, action_space, torch.device("cpu"))


# ---------------------------------------------------------------------------------------------- critic targets
def stream(seed=0):
    """Episodes of observation ids with random rewards/actions; both kinds of end, several shorter than n."""
    rng = np.random.default_rng(seed)
    eps, next_id = [], 1
    for length, terminated in ((5, True), (2, False), (4, False), (1, True), (6, True), (3, False)):
        eps.append({"ids": list(range(next_id, next_id + length + 1)), "terminated": terminated,
                    "reward": rng.normal(size=length).astype(np.float32),
                    "action": rng.uniform(-1, 1, (length, 2)).astype(np.float32)})
        next_id += length + 1
    return eps


def obs_of(i):
    return np.array([i / 10, math.sin(i), math.cos(i)], np.float32)


def filled_replay():
    replay = ReplayBuffer(STATE, ACTIONS, 1000, n_step=N_STEP, gamma=GAMMA, seed=0)
    for ep in stream():
        replay.add_first(obs_of(ep["ids"][0]))
        for j in range(len(ep["ids"]) - 1):
            done = j == len(ep["ids"]) - 2
            replay.add(ep["action"][j], float(ep["reward"][j]), obs_of(ep["ids"][j + 1]),
                       done and ep["terminated"], done and not ep["terminated"])
    replay.add_first(obs_of(500))
    return replay


def hand_returns():
    """``{round(obs[0]*10): (n-step reward, gamma^m * (1 - terminated))}`` by a plain loop over the stream."""
    out = {}
    for ep in stream():
        last = len(ep["ids"]) - 1
        for j in range(last):
            m = min(N_STEP, last - j)
            ret = sum(GAMMA**i * float(ep["reward"][j + i]) for i in range(m))
            done = ep["terminated"] and j + m == last
            out[ep["ids"][j]] = (ret, GAMMA**m * (1.0 - done))
    return out


class Recording:
    """The replay, keeping the batch the agent drew."""

    def __init__(self, replay):
        self.replay, self.batch = replay, None

    def sample(self, batch_size, n_step=None):
        self.batch = self.replay.sample(batch_size, n_step)
        return self.batch


def spy_on_targets(monkeypatch):
    """Records the regression target of every ``F.mse_loss`` call (the critic's Bellman targets)."""
    targets, real = [], F.mse_loss

    def mse(input, target, *args, **kwargs):
        targets.append(target.detach().clone())
        return real(input, target, *args, **kwargs)

    monkeypatch.setattr(F, "mse_loss", mse)
    return targets


def replay_terms(batch):
    """Hand n-step reward and bootstrap factor gamma^m (1 - done) for each sampled row, from the stream."""
    table = hand_returns()
    ids = np.rint(np.asarray(batch["obs"])[:, 0] * 10).astype(int)
    reward = torch.tensor([table[i][0] for i in ids], dtype=torch.float32)
    factor = torch.tensor([table[i][1] for i in ids], dtype=torch.float32)
    assert (factor == 0).any() and (factor > 0).any() and ((factor > 0) & (factor > GAMMA**N_STEP + 1e-6)).any()
    return reward, factor


def perturb(module, seed=1):
    """Move a target network off its online copy (at init they are equal, which would hide a target that uses the
    online network)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def test_sac_critic_target_is_the_n_step_soft_bellman_target(monkeypatch):
    agent = build("sac")
    perturb(agent.encoder_target), perturb(agent.critic_target, seed=2)
    ref = copy.deepcopy(agent)  # the networks as the update sees them
    replay = Recording(filled_replay())
    targets = spy_on_targets(monkeypatch)
    torch.manual_seed(123)
    metrics = agent.update(replay, frame=0)
    batch = to_torch(replay.batch, "cpu")
    reward, factor = replay_terms(replay.batch)
    torch.testing.assert_close(batch["reward"], reward, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batch["discount"], factor)

    with torch.no_grad():
        next_features = ref.encoder_target(batch["next_obs"])  # SAC's targets use the EMA encoder
        torch.manual_seed(123)  # the target policy sample is the update's first random draw
        next_action, log_prob = ref.actor(next_features)
        q1_next, q2_next = ref.critic_target(next_features, next_action)
        alpha = ref.log_alpha.exp()
        y = reward[:, None] + factor[:, None] * (torch.min(q1_next, q2_next) - alpha * log_prob)
        q1, q2 = ref.critic(ref.encoder(batch["obs"]), batch["action"])
    torch.testing.assert_close(targets[0], y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(metrics["critic_loss"], ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean(), rtol=1e-5,
                               atol=1e-6)
    # terminal rows: the target is the reward alone
    dead = factor == 0
    torch.testing.assert_close(targets[0][dead, 0], reward[dead], rtol=1e-5, atol=1e-6)


def test_drqv2_critic_target_uses_clipped_scheduled_noise_and_the_online_encoder(monkeypatch):
    agent = build("drqv2")
    perturb(agent.critic_target)
    ref = copy.deepcopy(agent)
    replay = Recording(filled_replay())
    targets = spy_on_targets(monkeypatch)
    frame = 100_000
    torch.manual_seed(7)
    metrics = agent.update(replay, frame=frame)
    batch = to_torch(replay.batch, "cpu")
    reward, factor = replay_terms(replay.batch)

    std = 1.0 + (0.1 - 1.0) * frame / 200_000  # linear(1.0, 0.1, 200000) at frame 100k = 0.55
    with torch.no_grad():
        next_features = ref.encoder(batch["next_obs"])  # DrQ-v2: no target encoder
        mu = ref.actor(next_features)
        torch.manual_seed(7)
        noise = (torch.randn_like(mu) * std).clamp(-0.3, 0.3)
        next_action = (mu + noise).clamp(-1.0, 1.0)
        q1_next, q2_next = ref.critic_target(next_features, next_action)
        y = reward[:, None] + factor[:, None] * torch.min(q1_next, q2_next)
    torch.testing.assert_close(targets[0], y, rtol=1e-5, atol=1e-5)
    assert float(metrics["stddev"]) == pytest.approx(0.55)


def test_drqv2_stddev_schedule_by_hand():
    agent = build("drqv2")  # default: linear(1.0, 0.1, 200000)
    for frame, expected in ((0, 1.0), (50_000, 0.775), (100_000, 0.55), (200_000, 0.1), (500_000, 0.1)):
        assert agent.stddev(frame) == pytest.approx(expected)
    agent = build("drqv2", ACTIONS, "agent.stddev_schedule=linear(0.5,0.2,1000)")
    assert agent.stddev(250) == pytest.approx(0.425) and agent.stddev(2000) == pytest.approx(0.2)
    assert build("drqv2", ACTIONS, "agent.stddev_schedule=0.3").stddev(10**6) == pytest.approx(0.3)


# ---------------------------------------------------------------------------------------------- tanh Gaussian
def reference_distribution(actor, features):
    """The documented policy: mean and bounded log-std (tanh-mapped into [-10, 2]) of a Normal, squashed by tanh."""
    mu, raw = actor.net(features).chunk(2, dim=-1)
    log_std = -10.0 + 0.5 * (2.0 - (-10.0)) * (torch.tanh(raw) + 1)
    return mu, log_std.exp()


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    agent = build("sac")
    features = torch.randn(64, agent.encoder.features_dim)
    with torch.no_grad():
        torch.manual_seed(5)
        action, log_prob = agent.actor(features)
        mu, std = reference_distribution(agent.actor, features)
        torch.manual_seed(5)
        pre_tanh = mu + torch.randn_like(mu) * std  # the same draw
        tanh = TanhTransform(cache_size=1)
        dist = TransformedDistribution(Independent(Normal(mu, std), 1), [tanh])
        expected_action = tanh(pre_tanh)
        expected = dist.log_prob(expected_action)  # the cache inverts tanh exactly
    assert (pre_tanh.abs() < 3).float().mean() > 0.9  # mostly unsaturated: the 1e-6 epsilon stays negligible
    torch.testing.assert_close(action, expected_action)
    ok = pre_tanh.abs().amax(-1) < 3
    torch.testing.assert_close(log_prob[ok, 0], expected[ok], rtol=1e-4, atol=2e-3)
    torch.testing.assert_close(agent.actor.mean(features), torch.tanh(mu))


def test_tanh_gaussian_entropy_estimate_matches_torch_distributions():
    agent = build("sac")
    features = torch.randn(1, agent.encoder.features_dim).expand(20_000, -1)
    with torch.no_grad():
        torch.manual_seed(0)
        _, log_prob = agent.actor(features)
        mu, std = reference_distribution(agent.actor, features)
        dist = TransformedDistribution(Independent(Normal(mu, std), 1), [TanhTransform(cache_size=1)])
        torch.manual_seed(1)
        sample = dist.sample()
        reference = -dist.log_prob(sample).mean()
    assert float(-log_prob.mean()) == pytest.approx(float(reference), abs=0.05)


# ---------------------------------------------------------------------------------------------- temperature
def set_policy(agent, log_std):
    """Make the policy state-independent: mean 0 and the given log-std in every dimension."""
    last = agent.actor.net[-1]
    a = agent.action_dim
    raw = math.atanh((log_std + 10.0) / 6.0 - 1.0)  # invert log_std = -10 + 6 (tanh(raw) + 1)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0] * a + [raw] * a))


@pytest.mark.parametrize("log_std, entropy_low", [(-9.0, True), (0.0, False)])
def test_temperature_rises_when_entropy_is_below_target_and_falls_above(log_std, entropy_low):
    agent = build("sac")
    set_policy(agent, log_std)
    assert agent.target_entropy == -2.0
    alpha_before = float(agent.log_alpha.detach().exp())
    log_alpha_before = float(agent.log_alpha.detach())
    metrics = agent.update_actor(torch.randn(256, agent.encoder.features_dim), frame=0)
    entropy = float(metrics["entropy"])
    # per dimension: tanh(N(0, e^-9)) has entropy ~ 0.5 log(2 pi e) - 9; tanh(N(0, 1)) about +0.55 (both < / > -1)
    assert (entropy < -2.0) == entropy_low, entropy
    # d/d log_alpha of mean(alpha * (-log pi - target)) = alpha * (entropy - target)
    assert float(agent.log_alpha.grad) == pytest.approx(alpha_before * (entropy + 2.0), rel=1e-4)
    moved = float(agent.log_alpha.detach()) - log_alpha_before
    assert (moved > 0) == entropy_low and moved != 0


def test_target_entropy_is_minus_the_action_dimension():
    assert build("sac").target_entropy == -2.0
    assert build("sac", gym.spaces.Box(-1, 1, (3,), np.float32)).target_entropy == -3.0
    assert build("sac", gym.spaces.Box(-1, 1, (2, 2), np.float32)).target_entropy == -4.0


# ---------------------------------------------------------------------------------------------- encoder gradients
class FixedBatch:
    def __init__(self, seed=0, batch_size=64):
        rng = np.random.default_rng(seed)
        self.batch = {"obs": rng.normal(size=(batch_size, 3)).astype(np.float32),
                      "next_obs": rng.normal(size=(batch_size, 3)).astype(np.float32),
                      "action": rng.uniform(-1, 1, (batch_size, 2)).astype(np.float32),
                      "reward": rng.normal(size=batch_size).astype(np.float32),
                      "discount": np.full(batch_size, 0.9, np.float32)}

    def sample(self, batch_size, n_step=None):
        return self.batch


@pytest.mark.parametrize("name", ["sac", "drqv2"])
def test_update_actor_step_leaves_the_encoder_and_the_critic_step_trains_it(name):
    agent = build(name)
    start = [p.detach().clone() for p in agent.encoder.parameters()]
    actor_start = [p.detach().clone() for p in agent.actor.parameters()]
    real, seen = agent.update_actor, []

    def spy(features, frame):
        assert not features.requires_grad  # the actor sees detached features
        grads = [p.grad.clone() for p in agent.encoder.parameters()]  # the critic step's, just before
        params = [p.detach().clone() for p in agent.encoder.parameters()]
        assert any(g.abs().sum() > 0 for g in grads)
        assert any(not torch.equal(a, b) for a, b in zip(params, start))  # the critic step moved the encoder
        out = real(features, frame)
        assert all(torch.equal(a, b) for a, b in zip(params, agent.encoder.parameters()))
        assert all(torch.equal(g, p.grad) for g, p in zip(grads, agent.encoder.parameters()))  # no actor gradient
        seen.append(frame)
        return out

    agent.update_actor = spy
    agent.update(FixedBatch(), frame=0)
    assert seen == [0]
    assert any(not torch.equal(a, b) for a, b in zip(actor_start, agent.actor.parameters()))


# ---------------------------------------------------------------------------------------------- EMA targets
def fill(module, value):
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_sac_targets_move_by_their_own_tau_toward_the_online_networks():
    agent = build("sac", ACTIONS, "agent.critic_tau=0.01", "agent.encoder_tau=0.05")
    fill(agent.critic, 1.0), fill(agent.critic_target, 3.0)
    fill(agent.encoder, 2.0), fill(agent.encoder_target, -2.0)
    agent.update_targets()
    # target <- tau * online + (1 - tau) * target
    assert all(torch.allclose(p, torch.full_like(p, 0.01 * 1.0 + 0.99 * 3.0)) for p in agent.critic_target.parameters())
    assert all(torch.allclose(p, torch.full_like(p, 0.05 * 2.0 + 0.95 * -2.0)) for p in agent.encoder_target.parameters())


def test_drqv2_critic_target_ema_by_hand():
    agent = build("drqv2", ACTIONS, "agent.critic_tau=0.2")
    fill(agent.critic, 1.0), fill(agent.critic_target, 0.0)
    agent.update_targets()
    agent.update_targets()
    # 0 -> 0.2 -> 0.2 * 1 + 0.8 * 0.2 = 0.36
    assert all(torch.allclose(p, torch.full_like(p, 0.36)) for p in agent.critic_target.parameters())
