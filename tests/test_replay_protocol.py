"""The replay contract (ssrl.data.protocol), value for value: the host ReplayBuffer and the DeviceReplay, fed the
same episode stream, give every transition and every sequence exactly as a plain loop over the stream computes
it — stacked observations, the action taken, n-step reward and discount (terminated vs truncated ends), and the
next observation (an episode's final observation where it ended, same-step autoreset for the device replay).

Each observation carries its own id (the value of its newest image frame, the first entry of its state vector),
so a sampled row names the step it came from; enough draws cover every transition."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.data import DeviceReplay, ReplayBuffer

GAMMA, STACK, DRAWS = 0.9, 3, 3000
LENGTHS = (5, 1, 7, 3, 6, 2)  # transitions per episode
TERMINATED = (True, False, True, False, False, True)  # else truncated


def stream():
    """Episodes as lists of observation ids (length + 1 each), with each step's action and reward."""
    episodes, next_id = [], 1
    for length in LENGTHS:
        episodes.append(list(range(next_id, next_id + length + 1)))
        next_id += length + 1
    return episodes


def action(i: int) -> np.ndarray:
    return np.array([i / 10, -i / 20], np.float32)


def reward(i: int) -> float:
    return float(np.float32(0.25 * i - 1.5))


def frames(kind: str, ids: list[int]) -> np.ndarray:
    """The stacked observation whose frames are those of ``ids`` (oldest first)."""
    if kind == "state":
        return np.array([ids[-1], -2.0 * ids[-1]], np.float32)
    return np.concatenate([np.full((1, 2, 2), i, np.uint8) for i in ids])


def stacked(kind: str, episode: list[int], j: int) -> np.ndarray:
    """Observation ``j`` of ``episode`` as the env gives it: its frame stack, the first frame repeated at the
    start."""
    return frames(kind, [episode[max(j - back, 0)] for back in range(STACK - 1, -1, -1)])


def space(kind: str) -> gym.spaces.Box:
    if kind == "state":
        return gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    return gym.spaces.Box(0, 255, (STACK, 2, 2), np.uint8)


ACTIONS = gym.spaces.Box(-1, 1, (2,), np.float32)


def reference(kind: str, n: int):
    """``{obs id: (obs, action, reward, discount, next_obs)}`` for every transition, by a plain loop."""
    out = {}
    for e, episode in enumerate(stream()):
        last = len(episode) - 1
        for j in range(last):
            m = min(n, last - j)
            ret = sum(GAMMA**i * reward(episode[j + i]) for i in range(m))
            discount = 0.0 if TERMINATED[e] and j + m == last else GAMMA**m
            out[episode[j]] = (stacked(kind, episode, j), action(episode[j]), ret, discount,
                               stacked(kind, episode, j + m))
    return out


def fill_host(kind: str, n: int) -> ReplayBuffer:
    replay = ReplayBuffer(space(kind), ACTIONS, 1000, frame_stack=STACK, n_step=n, gamma=GAMMA, seed=0)
    for e, episode in enumerate(stream()):
        replay.add_first(stacked(kind, episode, 0))
        for j, i in enumerate(episode[:-1]):
            done = j == len(episode) - 2
            replay.add(action(i), reward(i), stacked(kind, episode, j + 1), done and TERMINATED[e],
                       done and not TERMINATED[e])
    replay.add_first(frames(kind, [999 % 256] * (1 if kind == "state" else STACK)))  # an open episode
    return replay


def fill_device(kind: str, n: int) -> DeviceReplay:
    replay = DeviceReplay(space(kind), ACTIONS, 1, 1000, frame_stack=STACK, n_step=n, gamma=GAMMA, seed=0)
    one = lambda x: torch.as_tensor(np.asarray(x))[None]
    for e, episode in enumerate(stream()):
        for j, i in enumerate(episode[:-1]):
            done = j == len(episode) - 2
            final = one(stacked(kind, episode, j + 1)) if done else None
            replay.add(one(stacked(kind, episode, j)), one(action(i)), one(np.float32(reward(i))),
                       one(done and TERMINATED[e]), one(done and not TERMINATED[e]), final)
    # The step after the last episode (same-step autoreset: the env already shows the next episode's first obs).
    replay.add(one(frames(kind, [999 % 256] * (1 if kind == "state" else STACK))), one(action(0)),
               one(np.float32(0.0)), one(False), one(False))
    return replay


def obs_id(kind: str, obs: np.ndarray) -> int:
    return int(obs[0]) if kind == "state" else int(obs[-1, 0, 0])


@pytest.mark.parametrize("fill", [fill_host, fill_device], ids=["ReplayBuffer", "DeviceReplay"])
@pytest.mark.parametrize("kind", ["state", "pixels"])
@pytest.mark.parametrize("n", [1, 3])
def test_transitions_match_a_plain_loop(fill, kind, n):
    expected = reference(kind, n)
    replay = fill(kind, n)
    assert len(replay) == len(expected)
    batch = {k: np.asarray(v) for k, v in replay.sample(DRAWS).items()}
    seen = set()
    for b in range(DRAWS):
        t = obs_id(kind, batch["obs"][b])
        assert t in expected, f"sampled a transition from obs {t}, which has none"
        obs, act, ret, discount, next_obs = expected[t]
        np.testing.assert_array_equal(batch["obs"][b], obs)
        np.testing.assert_array_equal(batch["action"][b], act)
        np.testing.assert_allclose(batch["reward"][b], ret, rtol=1e-6, err_msg=f"n-step reward from obs {t}")
        np.testing.assert_allclose(batch["discount"][b], discount, rtol=1e-6, err_msg=f"discount from obs {t}")
        np.testing.assert_array_equal(batch["next_obs"][b], next_obs, err_msg=f"next_obs from obs {t}")
        seen.add(t)
    assert seen == set(expected)  # every transition, episode ends included


@pytest.mark.parametrize("fill", [fill_host, fill_device], ids=["ReplayBuffer", "DeviceReplay"])
@pytest.mark.parametrize("kind", ["state", "pixels"])
def test_sequences_match_a_plain_loop(fill, kind):
    length = 3
    expected = {}
    for e, episode in enumerate(stream()):
        last = len(episode) - 1
        for j in range(last - length + 1):
            ids = episode[j : j + length]
            expected[episode[j]] = (np.stack([stacked(kind, episode, j + i) for i in range(length + 1)]),
                                    np.stack([action(i) for i in ids]), np.array([reward(i) for i in ids]),
                                    np.array([TERMINATED[e] and j + i + 1 == last for i in range(length)]))
    batch = {k: np.asarray(v) for k, v in fill(kind, 1).sample_sequences(DRAWS, length).items()}
    seen = set()
    for b in range(DRAWS):
        t = obs_id(kind, batch["obs"][b][0])
        assert t in expected, f"sampled a sequence from obs {t} that leaves its episode"
        obs, act, rew, term = expected[t]
        np.testing.assert_array_equal(batch["obs"][b], obs)
        np.testing.assert_array_equal(batch["action"][b], act)
        np.testing.assert_allclose(batch["reward"][b], rew, rtol=1e-6)
        np.testing.assert_array_equal(batch["terminated"][b], term)
        seen.add(t)
    assert seen == set(expected)
