"""DeviceReplay against hand-built batched rollouts with same-step autoreset (a reference in plain Python)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.data import DeviceReplay, ReplayBuffer, to_torch
from ssrl.errors import ConfigError

GAMMA = 0.9


def rollout(ends: list[dict[int, bool]], steps: int, k: int = 1, image: bool = False, seed: int = 0):
    """Feed a DeviceReplay-shaped rollout: env n's episode ends at the steps in ``ends[n]`` (value: terminated).

    Every observation (and final observation) carries a unique id: state obs ``[id]``; images have C=1 frames
    filled with the id, stacked k deep as the single-env frame stack does. Returns the vector-step records
    and, per id, the true observation.
    """
    rng = np.random.default_rng(seed)
    num_envs, next_id = len(ends), 1
    truth: dict[int, np.ndarray] = {}
    stacks: list[list[int]] = [[] for _ in range(num_envs)]

    def observe(n: int, new_episode: bool) -> np.ndarray:
        nonlocal next_id
        uid, next_id = next_id, next_id + 1
        stacks[n] = [uid] * k if new_episode else (stacks[n] + [uid])[-k:]
        if image:
            obs = np.stack([np.full((3, 3), i, np.uint8) for i in stacks[n]])
        else:
            obs = np.array([uid], np.float32)
        truth[uid] = obs
        return obs

    obs = [observe(n, True) for n in range(num_envs)]
    records = []
    for t in range(steps):
        reward = rng.normal(size=num_envs).astype(np.float32)
        action = rng.uniform(-1, 1, (num_envs, 2)).astype(np.float32)
        done = np.array([t in ends[n] for n in range(num_envs)])
        term = np.array([ends[n].get(t, False) for n in range(num_envs)])
        final = [observe(n, False) if done[n] else np.zeros_like(obs[0]) for n in range(num_envs)]
        nxt = [observe(n, done[n]) if done[n] else observe(n, False) for n in range(num_envs)]
        records.append({"obs": np.stack(obs), "action": action, "reward": reward, "term": term,
                        "trunc": done & ~term, "final": np.stack(final), "done": done, "next": np.stack(nxt)})
        obs = nxt
    return records, truth


def feed(replay: DeviceReplay, records: list[dict]) -> None:
    for r in records:
        replay.add(torch.as_tensor(r["obs"]), torch.as_tensor(r["action"]), torch.as_tensor(r["reward"]),
                   torch.as_tensor(r["term"]), torch.as_tensor(r["trunc"]),
                   torch.as_tensor(r["final"]) if r["done"].any() else None)


def uid(obs: np.ndarray, image: bool) -> int:
    return int(obs[-1, 0, 0]) if image else int(obs[0])


def expected(records: list[dict], t: int, n: int, n_step: int, image: bool = False):
    """Reference n-step transition from step t of env n: (reward, discount, next obs id)."""
    last = len(records) - 1
    reward, m = 0.0, 0
    for i in range(n_step):
        r = records[t + i]
        if r["done"][n]:
            reward += GAMMA**i * r["reward"][n]
            return reward, 0.0 if r["term"][n] else GAMMA ** (i + 1), uid(r["final"][n], image)
        if t + i + 1 > last:
            break
        reward += GAMMA**i * r["reward"][n]
        m = i + 1
    return reward, GAMMA**m, uid(records[t + m]["obs"][n], image)


def index(records: list[dict], image: bool) -> dict[int, tuple[int, int]]:
    return {uid(r["obs"][n], image): (t, n) for t, r in enumerate(records) for n in range(len(r["done"]))}


ENDS = [{2: False, 6: True, 7: False}, {4: True, 10: False}, {}]


@pytest.mark.parametrize("n_step", [1, 3])
def test_n_step_transitions_match_reference_across_autoresets(n_step: int) -> None:
    records, _ = rollout(ENDS, 12)
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    replay = DeviceReplay(space, gym.spaces.Box(-1, 1, (2,)), 3, 3 * 20, n_step=n_step, gamma=GAMMA, seed=0)
    feed(replay, records)
    batch = replay.sample(3000)
    where = index(records, False)
    seen = set()
    for i in range(3000):
        t, n = where[int(batch["obs"][i, 0])]
        reward, discount, next_id = expected(records, t, n, n_step)
        assert int(batch["next_obs"][i, 0]) == next_id, (t, n)
        assert float(batch["reward"][i]) == pytest.approx(reward, abs=1e-5)
        assert float(batch["discount"][i]) == pytest.approx(discount, abs=1e-6)
        np.testing.assert_array_equal(batch["action"][i].numpy(), records[t]["action"][n])
        seen.add((t, n))
    assert seen == {(t, n) for t in range(11) for n in range(3)}  # every stored transition, none else
    assert len(replay) == 33


def test_sequences_stay_inside_one_episode() -> None:
    records, _ = rollout(ENDS, 12)
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    replay = DeviceReplay(space, gym.spaces.Box(-1, 1, (2,)), 3, 60, seed=1)
    feed(replay, records)
    where = index(records, False)
    batch = replay.sample_sequences(500, 3)
    assert batch["obs"].shape == (500, 4, 1) and batch["action"].shape == (500, 3, 2)
    starts = set()
    for i in range(500):
        t, n = where[int(batch["obs"][i, 0, 0])]
        starts.add((t, n))
        for j in range(3):
            r = records[t + j]
            assert not r["done"][n] or j == 2, "sequence crosses an episode end"
            assert int(batch["obs"][i, j, 0]) == uid(r["obs"][n], False)
            assert float(batch["reward"][i, j]) == r["reward"][n]
            assert bool(batch["terminated"][i, j]) == bool(r["term"][n])
        nxt = records[t + 2]["final"][n] if records[t + 2]["done"][n] else records[t + 3]["obs"][n]
        assert int(batch["obs"][i, 3, 0]) == uid(nxt, False)
    assert (4, 1) in {(t + 2, n) for t, n in starts}  # windows ending in a termination are drawn
    assert (0, 2) in starts and (8, 2) in starts and (7, 0) not in starts  # (7, 0) is a one-step episode


def test_pixel_stacks_are_rebuilt_within_episodes_with_wraparound() -> None:
    k = 3
    records, truth = rollout([{3: False, 9: True}, {5: False}], 14, k=k, image=True)
    space = gym.spaces.Box(0, 255, (k, 3, 3), np.uint8)
    replay = DeviceReplay(space, gym.spaces.Box(-1, 1, (2,)), 2, 2 * 10, frame_stack=k, n_step=2, gamma=GAMMA,
                          seed=2)
    feed(replay, records)  # 14 steps into 10 slots: steps 0..3 overwritten, stacks valid from step 6
    batch = replay.sample(2000)
    where = index(records, True)
    for i in range(2000):
        obs, nxt = batch["obs"][i].numpy(), batch["next_obs"][i].numpy()
        t, n = where[uid(obs, True)]
        assert t >= 6
        np.testing.assert_array_equal(obs, truth[uid(obs, True)])
        np.testing.assert_array_equal(nxt, truth[expected(records, t, n, 2, image=True)[2]])
    seq = replay.sample_sequences(200, 2)
    for i in range(200):
        for j in range(3):
            np.testing.assert_array_equal(seq["obs"][i, j].numpy(), truth[uid(seq["obs"][i, j].numpy(), True)])
    # newest frame only (9 bytes) per step, beside action, reward, done, terminated, episode step, final id
    assert replay.nbytes == 20 * (9 + 8 + 4 + 1 + 1 + 4 + 8) + 3 * (9 + 8) + 2 * 4


def test_final_observation_buffer_grows_when_episodes_are_short() -> None:
    ends = [{t: False for t in range(0, 40, 2)}]  # two-step episodes: far more finals than the initial side buffer
    records, _ = rollout(ends, 40)
    replay = DeviceReplay(gym.spaces.Box(-np.inf, np.inf, (1,), np.float32), gym.spaces.Box(-1, 1, (2,)), 1, 30,
                          seed=3)
    feed(replay, records)
    batch = replay.sample(500)
    where = index(records, False)
    for i in range(500):
        t, n = where[int(batch["obs"][i, 0])]
        assert int(batch["next_obs"][i, 0]) == expected(records, t, n, 1)[2]


def test_end_episodes_truncates_open_episodes_at_the_last_step() -> None:
    """What a resumed run does before restarting its envs: step 11's next obs becomes a (truncation) final obs."""
    records, _ = rollout(ENDS, 13)
    replay = DeviceReplay(gym.spaces.Box(-np.inf, np.inf, (1,), np.float32), gym.spaces.Box(-1, 1, (2,)), 3, 60,
                          gamma=GAMMA, seed=4)
    feed(replay, records[:12])
    replay.end_episodes(torch.as_tensor(records[11]["next"]))
    feed(replay, records[12:])  # new episodes start at step 12 (the trainer resets its envs)
    batch = replay.sample(2000)
    where = index(records, False)
    steps = [where[int(x)] for x in batch["obs"][:, 0]]
    last = [i for i, (t, _) in enumerate(steps) if t == 11]
    assert len(last) > 100
    for i in last:
        assert int(batch["next_obs"][i, 0]) == int(records[11]["next"][steps[i][1], 0])
        assert float(batch["discount"][i]) == pytest.approx(GAMMA)
    seq = replay.sample_sequences(300, 2)
    assert not any(where[int(x)][0] == 11 for x in seq["obs"][:, 0, 0])  # no window crosses the cut


def test_state_dict_round_trip_and_same_batches() -> None:
    records, _ = rollout(ENDS, 12)
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    a = DeviceReplay(space, gym.spaces.Box(-1, 1, (2,)), 3, 60, n_step=2, seed=5)
    feed(a, records)
    b = DeviceReplay(space, gym.spaces.Box(-1, 1, (2,)), 3, 60, n_step=2, seed=5)
    b.load_state_dict(a.state_dict())
    for x, y in zip(a.sample(64).values(), b.sample(64).values()):
        assert torch.equal(x, y)


def test_batches_match_replay_buffer_layout() -> None:
    """Same keys, dtypes and shapes as the numpy ReplayBuffer's batches after to_torch."""
    space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action = gym.spaces.Box(-1, 1, (2,))
    records, _ = rollout([{5: False}], 8)
    device = DeviceReplay(space, action, 1, 20, n_step=2)
    feed(device, records)
    host = ReplayBuffer(space, action, 20, n_step=2)
    host.add_first(records[0]["obs"][0])
    for r in records[:5]:
        host.add(r["action"][0], float(r["reward"][0]), r["final"][0] if r["done"][0] else r["next"][0],
                 bool(r["term"][0]), bool(r["trunc"][0]))
    for x, y in ((to_torch(host.sample(4), "cpu"), device.sample(4)),
                 (to_torch(host.sample_sequences(4, 2), "cpu"), device.sample_sequences(4, 2))):
        assert x.keys() == y.keys()
        for key in x:
            assert (x[key].dtype, x[key].shape) == (y[key].dtype, y[key].shape), key


def test_capacity_that_does_not_fit_is_a_config_error_before_allocating() -> None:
    space = gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)
    with pytest.raises(ConfigError, match="does not fit.*lower replay_capacity"):
        DeviceReplay(space, gym.spaces.Box(-1, 1, (6,)), 1024, 10**12)


def test_episode_end_without_final_obs_is_an_error() -> None:
    replay = DeviceReplay(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Box(-1, 1, (1,)), 1, 10)
    with pytest.raises(ValueError, match="final_obs"):
        replay.add(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, dtype=torch.bool),
                   torch.zeros(1, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_samples_stay_on_the_device() -> None:
    records, _ = rollout(ENDS, 12)
    replay = DeviceReplay(gym.spaces.Box(-np.inf, np.inf, (1,), np.float32), gym.spaces.Box(-1, 1, (2,)), 3, 60,
                          device="cuda", n_step=3)
    feed(replay, records)
    assert all(v.is_cuda for v in replay.sample(32).values())
    assert all(v.is_cuda for v in replay.sample_sequences(8, 3).values())
