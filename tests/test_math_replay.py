"""Replay maths against plain Python loops: ``ssrl.data.nstep.nstep`` on random windows (episode ends inside the
window, terminal vs truncated, the stored-steps cap), and value-level parity of the host ``ReplayBuffer`` and the
``DeviceReplay`` fed one random episode stream (terminal and truncated ends, same-step autoreset): every transition
(obs, action, n-step reward, discount, next_obs) is the same in both and equals the plain loop's."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.data import DeviceReplay, ReplayBuffer
from ssrl.data.nstep import nstep


def nstep_loop(rewards, ends, terminal, available, gamma):
    """One window, the documented way: it runs to the first episode end among the n steps, else to
    min(n, available); the return sums gamma^i r_i over it and the discount is gamma^m, 0 if that end was a
    termination."""
    n = len(rewards)
    first_end = next((i for i in range(n) if ends[i]), None)
    m = first_end + 1 if first_end is not None else min(n, available)
    ret = 0.0
    for i in range(m):
        ret += gamma**i * rewards[i]
    terminated = first_end is not None and terminal[first_end]
    return ret, (0.0 if terminated else gamma**m), m


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("gamma", [0.9, 0.99, 1.0])
def test_nstep_matches_a_plain_loop(n, gamma):
    rng = np.random.default_rng(n)
    B = 200
    rewards = rng.normal(size=(B, n))
    ends = rng.random((B, n)) < 0.25
    terminal = rng.random((B, n)) < 0.5
    available = rng.integers(1, n + 2, B)
    reward, discount, m = nstep(torch.from_numpy(rewards), torch.from_numpy(ends), torch.from_numpy(terminal),
                                torch.from_numpy(available), gamma)
    for b in range(B):
        ret, disc, mm = nstep_loop(rewards[b], ends[b], terminal[b], int(available[b]), gamma)
        assert int(m[b]) == mm, (b, ends[b], available[b])
        assert float(reward[b]) == pytest.approx(ret, rel=1e-12, abs=1e-12)
        assert float(discount[b]) == pytest.approx(disc, rel=1e-12, abs=1e-12)
    assert ends.any(1).mean() > 0.2 and (ends & terminal).any() and (ends & ~terminal).any()


def test_nstep_hand_values():
    g = 0.5
    rewards = torch.tensor([[1.0, 2.0, 4.0]] * 4, dtype=torch.float64)
    ends = torch.tensor([[False, False, False], [False, True, False], [False, True, False], [True, False, False]])
    terminal = torch.tensor([[False] * 3, [False, True, False], [False, False, False], [False] * 3])
    available = torch.tensor([3, 3, 3, 3])
    reward, discount, m = nstep(rewards, ends, terminal, available, g)
    # no end: 1 + .5*2 + .25*4 = 3, discount .5^3; terminated at step 1: 1 + 1 = 2, discount 0;
    # truncated at step 1: 2, discount .25 (bootstrap from obs t+2); truncated at step 0: 1, discount .5
    torch.testing.assert_close(reward, torch.tensor([3.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(discount, torch.tensor([0.125, 0.0, 0.25, 0.5], dtype=torch.float64))
    assert m.tolist() == [3, 2, 2, 1]
    # the stored-steps cap: two steps stored after t, no end: m = 2
    reward, discount, m = nstep(rewards[:1], ends[:1], terminal[:1], torch.tensor([2]), g)
    assert m.tolist() == [2] and float(reward) == 2.0 and float(discount) == 0.25


# ------------------------------------------------------------------------------------------------- parity
GAMMA = 0.9
ACTIONS = gym.spaces.Box(-1, 1, (2,), np.float32)
OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)


def episodes(seed=0):
    """Random episodes: each a dict of observation ids (length + 1), rewards, actions and its end."""
    rng = np.random.default_rng(seed)
    out, next_id = [], 1
    for length in (4, 1, 6, 2, 3, 5, 1, 7):
        ids = list(range(next_id, next_id + length + 1))
        next_id += length + 1
        out.append({"ids": ids, "reward": rng.normal(size=length).astype(np.float32),
                    "action": rng.uniform(-1, 1, (length, 2)).astype(np.float32),
                    "terminated": bool(rng.random() < 0.5)})
    out[0]["terminated"], out[1]["terminated"] = True, False  # both kinds of end, whatever the draw
    return out


def obs_of(i):
    return np.array([i, np.sin(i), -0.5 * i], np.float32)


def loop_reference(eps, n):
    """``{obs id: (obs, action, n-step reward, discount, next_obs)}`` by a plain loop over the stream."""
    out = {}
    for ep in eps:
        ids, last = ep["ids"], len(ep["ids"]) - 1
        for j in range(last):
            m, ret = 0, 0.0
            for i in range(n):
                ret += GAMMA**i * float(ep["reward"][j + i])
                m += 1
                if j + m == last:  # the episode ended inside the window
                    break
            discount = 0.0 if (ep["terminated"] and j + m == last) else GAMMA**m
            out[ids[j]] = (obs_of(ids[j]), ep["action"][j], ret, discount, obs_of(ids[j + m]))
    return out


def host_replay(eps, n):
    replay = ReplayBuffer(OBS, ACTIONS, 1000, n_step=n, gamma=GAMMA, seed=0)
    for ep in eps:
        replay.add_first(obs_of(ep["ids"][0]))
        for j in range(len(ep["ids"]) - 1):
            done = j == len(ep["ids"]) - 2
            replay.add(ep["action"][j], float(ep["reward"][j]), obs_of(ep["ids"][j + 1]),
                       done and ep["terminated"], done and not ep["terminated"])
    replay.add_first(obs_of(10_000))  # the next episode has begun
    return replay


def device_replay(eps, n):
    """Same-step autoreset: the step that ends an episode passes its final obs aside; the next add is the next
    episode's first obs."""
    replay = DeviceReplay(OBS, ACTIONS, 1, 1000, n_step=n, gamma=GAMMA, seed=0)
    one = lambda x: torch.as_tensor(np.asarray(x))[None]
    for ep in eps:
        for j in range(len(ep["ids"]) - 1):
            done = j == len(ep["ids"]) - 2
            final = one(obs_of(ep["ids"][j + 1])) if done else None
            replay.add(one(obs_of(ep["ids"][j])), one(ep["action"][j]), one(ep["reward"][j]),
                       one(done and ep["terminated"]), one(done and not ep["terminated"]), final)
    replay.add(one(obs_of(10_000)), one(np.zeros(2, np.float32)), one(np.float32(0.0)), one(False), one(False))
    return replay


def by_obs_id(replay, draws=4000):
    """Every sampleable transition, keyed by its observation's id (enough uniform draws cover all of them)."""
    batch = {k: np.asarray(v) for k, v in replay.sample(draws).items()}
    out = {}
    for b in range(draws):
        out[int(batch["obs"][b, 0])] = tuple(batch[k][b] for k in ("obs", "action", "reward", "discount", "next_obs"))
    return out


@pytest.mark.parametrize("n", [1, 3])
def test_host_and_device_replays_agree_value_for_value_with_a_plain_loop(n):
    eps = episodes()
    expected = loop_reference(eps, n)
    host, device = by_obs_id(host_replay(eps, n)), by_obs_id(device_replay(eps, n))
    assert set(host) == set(device) == set(expected)
    for t, (obs, action, ret, discount, next_obs) in expected.items():
        for name, got in (("ReplayBuffer", host[t]), ("DeviceReplay", device[t])):
            np.testing.assert_array_equal(got[0], obs, err_msg=f"{name} obs {t}")
            np.testing.assert_array_equal(got[1], action, err_msg=f"{name} action {t}")
            np.testing.assert_allclose(got[2], ret, rtol=1e-5, atol=1e-6, err_msg=f"{name} reward {t}")
            np.testing.assert_allclose(got[3], discount, rtol=1e-6, err_msg=f"{name} discount {t}")
            np.testing.assert_array_equal(got[4], next_obs, err_msg=f"{name} next_obs {t}")
        for k in range(5):  # and the two replays agree with each other exactly (up to float32 rounding)
            np.testing.assert_allclose(host[t][k], device[t][k], rtol=1e-6, atol=1e-7)
    # the stream has terminal ends (discount 0) and truncated ends (bootstrap from the episode's last obs)
    assert any(d == 0.0 for *_, d, _ in expected.values())
    truncated_last = {ep["ids"][-1] for ep in eps if not ep["terminated"]}
    assert any(d > 0 and int(nxt[0]) in truncated_last for *_, d, nxt in expected.values())
