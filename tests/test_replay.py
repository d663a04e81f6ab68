"""ReplayBuffer against a naive reference that stores full obs/next_obs and computes n-step returns in loops."""

from __future__ import annotations

import io
import re
import zipfile
from collections import deque
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.data import ReplayBuffer, to_torch

K, H, W, GAMMA = 3, 4, 5, 0.9
PIXELS = gym.spaces.Box(0, 255, (3 * K, H, W), np.uint8)
STATE = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
SPACES = {"pixels": PIXELS, "state": STATE, "dict": gym.spaces.Dict({"pixels": PIXELS, "state": STATE})}
ACTION = gym.spaces.Box(-1e6, 1e6, (2,), np.float32)


# ---------------------------------------------------------------- synthetic env
def frame(s: int) -> np.ndarray:
    """A 3-channel frame that encodes step id ``s``."""
    f = np.empty((3, H, W), np.uint8)
    f[0], f[1], f[2] = s % 256, s // 256 % 256, s * 7 % 256
    return f


def frame_ids(pixels: np.ndarray) -> np.ndarray:
    """Step ids of the frames of a stacked observation (..., 3k, H, W) -> (..., k)."""
    return pixels[..., 0::3, 0, 0].astype(np.int64) + 256 * pixels[..., 1::3, 0, 0].astype(np.int64)


def obs_id(obs, kind: str) -> np.ndarray:
    """Step id of the newest frame of (a batch of) observations."""
    if kind == "state":
        return obs[..., 0].astype(np.int64)
    return frame_ids(obs["pixels"] if kind == "dict" else obs)[..., -1]


def reward_of(s: int) -> float:
    return float(np.float32((s * 7919) % 97 / 10 - 4))


def play(buffers, episodes: list[tuple[int, str]], kind: str, s: int = 0) -> int:
    """Feed episodes (num transitions, "terminated" | "truncated" | "ongoing") to buffers; return next step id."""
    for length, ending in episodes:
        stack = deque([frame(s)] * K, maxlen=K)

        def obs(s=None, stack=stack):
            pixels, state = np.concatenate(stack), np.array([s, -s], np.float32)
            return {"pixels": pixels, "state": state, "dict": {"pixels": pixels, "state": state}}[kind]

        for b in buffers:
            b.add_first(obs(s))
        for j in range(length):
            s += 1
            stack.append(frame(s))
            last = j == length - 1
            for b in buffers:
                b.add(np.array([s, s + 0.5], np.float32), reward_of(s), obs(s),
                      last and ending == "terminated", last and ending == "truncated")
        s += 1
    return s


def random_episodes(rng: np.random.Generator, n: int, max_len: int = 12, min_len: int = 0) -> list[tuple[int, str]]:
    """n finished episodes (length 0: reset only, never finished) and a final ongoing one."""
    eps = [(int(rng.integers(min_len, max_len)), str(rng.choice(["terminated", "truncated"]))) for _ in range(n)]
    return eps + [(int(rng.integers(1, max_len)), "ongoing")]


class NaiveReplay:
    """Stores every observation of every episode; validity and n-step returns computed in plain loops."""

    def __init__(self, capacity: int, kind: str) -> None:
        self.capacity, self.kind, self.episodes, self.steps = capacity, kind, [], 0

    def add_first(self, obs) -> None:
        self.episodes.append({"obs": [obs], "action": [], "reward": [], "terminated": False})
        self.steps += 1

    def add(self, action, reward, next_obs, terminated, truncated) -> None:
        ep = self.episodes[-1]
        ep["obs"].append(next_obs), ep["action"].append(action), ep["reward"].append(reward)
        ep["terminated"] = terminated
        self.steps += 1

    def _stored(self, obs) -> bool:
        """All frames of obs (its oldest stacked frame) are within the last `capacity` steps."""
        pixels = obs["pixels"] if self.kind == "dict" else obs
        oldest_frame = frame_ids(pixels).min() if self.kind != "state" else obs[0]
        return oldest_frame >= self.steps - self.capacity

    def transitions(self, n: int) -> dict[int, dict]:
        out = {}
        for ep in self.episodes:
            T = len(ep["action"])
            for j in range(T):
                if not self._stored(ep["obs"][j]):
                    continue
                m = min(n, T - j)
                out[int(obs_id(ep["obs"][j], self.kind))] = {
                    "obs": ep["obs"][j],
                    "action": ep["action"][j],
                    "reward": sum(GAMMA**i * ep["reward"][j + i] for i in range(m)),
                    "discount": 0.0 if ep["terminated"] and j + m == T else GAMMA**m,
                    "next_obs": ep["obs"][j + m],
                }
        return out

    def sequences(self, length: int) -> dict[int, dict]:
        out = {}
        for ep in self.episodes:
            T = len(ep["action"])
            for j in range(T - length + 1):
                if self._stored(ep["obs"][j]):
                    out[int(obs_id(ep["obs"][j], self.kind))] = {
                        "obs": ep["obs"][j : j + length + 1],
                        "action": ep["action"][j : j + length],
                        "reward": ep["reward"][j : j + length],
                        "terminated": [ep["terminated"] and j + i + 1 == T for i in range(length)],
                    }
        return out


def assert_obs_equal(a, b) -> None:
    if isinstance(b, dict):
        assert a.keys() == b.keys()
        for key in b:
            assert_obs_equal(a[key], b[key])
    else:
        np.testing.assert_array_equal(a, b)


def stacked(rows: list):
    """Stack reference rows (arrays or dicts of arrays) into a batch."""
    return {k: stacked([r[k] for r in rows]) for k in rows[0]} if isinstance(rows[0], dict) else np.stack(rows)


def check_transitions(buf: ReplayBuffer, ref: NaiveReplay, kind: str, n: int, draws: int = 40) -> None:
    """Every sampled transition equals the reference; all valid transitions get sampled, roughly uniformly."""
    expected = ref.transitions(n)
    assert len(buf) == len(expected) > 0
    batch = buf.sample(draws * len(expected), n_step=n)
    ids = obs_id(batch["obs"], kind)
    assert set(ids) <= expected.keys()  # nothing overwritten or across a boundary
    exp = {key: stacked([expected[t][key] for t in ids]) for key in batch}
    for key in ("obs", "next_obs", "action"):
        assert_obs_equal(batch[key], exp[key])
    np.testing.assert_allclose(batch["reward"], exp["reward"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch["discount"], exp["discount"], rtol=1e-6)
    counts = np.unique(ids, return_counts=True)[1]
    assert len(counts) == len(expected)
    assert counts.min() > 0.4 * draws and counts.max() < 1.6 * draws


# ------------------------------------------------------------------------ tests
@pytest.mark.parametrize("kind", ["pixels", "state", "dict"])
@pytest.mark.parametrize("n", [1, 3, 7])
def test_transitions_match_reference(kind: str, n: int) -> None:
    rng = np.random.default_rng(n)
    buf = ReplayBuffer(SPACES[kind], ACTION, 10_000, frame_stack=K, n_step=n, gamma=GAMMA, seed=0)
    ref = NaiveReplay(10_000, kind)
    play([buf, ref], random_episodes(rng, 15), kind)
    check_transitions(buf, ref, kind, n)
    assert buf.num_frames == ref.steps


def test_batch_layout_and_episode_start_stack() -> None:
    buf = ReplayBuffer(SPACES["dict"], ACTION, 100, frame_stack=K, n_step=2, gamma=GAMMA, seed=0)
    play([buf], [(5, "truncated"), (4, "terminated")], "dict")
    batch = buf.sample(256)
    assert batch["obs"]["pixels"].shape == (256, 3 * K, H, W) and batch["obs"]["pixels"].dtype == np.uint8
    assert batch["obs"]["state"].shape == (256, 2) and batch["obs"]["state"].dtype == np.float32
    assert batch["action"].shape == (256, 2) and batch["action"].dtype == np.float32
    assert batch["reward"].shape == batch["discount"].shape == (256,)
    assert batch["reward"].dtype == batch["discount"].dtype == np.float32
    ids = frame_ids(batch["obs"]["pixels"])
    starts = np.isin(ids[:, -1], [0, 6])
    assert starts.any() and (ids[starts] == ids[starts][:, :1]).all()  # first frame repeated k times
    inner = ids[:, -1] == 7
    assert inner.any() and (ids[inner] == [6, 6, 7]).all()


@pytest.mark.parametrize("ending, discount", [("terminated", 0.0), ("truncated", GAMMA**2)])
def test_nstep_truncated_at_episode_end(ending: str, discount: float) -> None:
    buf = ReplayBuffer(PIXELS, ACTION, 100, frame_stack=K, n_step=5, gamma=GAMMA, seed=0)
    play([buf], [(3, ending)], "pixels")
    batch = buf.sample(200)
    t = obs_id(batch["obs"], "pixels")
    row = np.flatnonzero(t == 1)[0]  # two steps left: m = 2 < n_step
    assert batch["reward"][row] == pytest.approx(reward_of(2) + GAMMA * reward_of(3), rel=1e-6)
    assert batch["discount"][row] == pytest.approx(discount)
    assert obs_id(batch["next_obs"], "pixels")[row] == 3
    assert set(t) == {0, 1, 2}


@pytest.mark.parametrize("kind", ["pixels", "dict"])
def test_sequences_never_cross_boundaries(kind: str) -> None:
    rng = np.random.default_rng(1)
    length = 4
    buf = ReplayBuffer(SPACES[kind], ACTION, 10_000, frame_stack=K, gamma=GAMMA, seed=0)
    ref = NaiveReplay(10_000, kind)
    play([buf, ref], random_episodes(rng, 30, max_len=10), kind)
    expected = ref.sequences(length)
    batch = buf.sample_sequences(30 * len(expected), length)
    B = len(batch["reward"])
    assert batch["action"].shape == (B, length, 2) and batch["reward"].shape == (B, length)
    assert batch["terminated"].dtype == bool and batch["terminated"].shape == (B, length)
    ids = obs_id(batch["obs"], kind)
    assert ids.shape == (B, length + 1)
    np.testing.assert_array_equal(np.diff(ids, axis=1), 1)  # contiguous, same episode (ids jump by 2 at resets)
    assert set(ids[:, 0]) <= expected.keys()
    for key in batch:
        assert_obs_equal(batch[key], stacked([stacked(expected[t][key]) for t in ids[:, 0]]))
    assert len(np.unique(ids[:, 0])) == len(expected)
    with pytest.raises(ValueError):
        buf.sample_sequences(4, 10)


@pytest.mark.parametrize("kind", ["pixels", "state", "dict"])
def test_wraparound_drops_oldest(kind: str) -> None:
    rng = np.random.default_rng(2)
    buf = ReplayBuffer(SPACES[kind], ACTION, 37, frame_stack=K, n_step=3, gamma=GAMMA, seed=0)
    ref = NaiveReplay(37, kind)
    for _ in range(6):  # check at several fill levels, each wrapping further
        play([buf, ref], random_episodes(rng, 6)[:-1], kind, s=ref.steps)
        check_transitions(buf, ref, kind, 3)
        ids = obs_id(buf.sample(500)["obs"], kind)
        assert ids.min() >= ref.steps - 37
    assert buf.num_frames == 37


def test_episode_longer_than_capacity() -> None:
    buf = ReplayBuffer(PIXELS, ACTION, 20, frame_stack=K, n_step=2, gamma=GAMMA, seed=0)
    ref = NaiveReplay(20, "pixels")
    play([buf, ref], [(3, "terminated"), (50, "ongoing")], "pixels")
    check_transitions(buf, ref, "pixels", 2)
    assert len(buf) == 20 - 1 - (K - 1)  # newest step has no successor; oldest k-1 stacks are incomplete


@pytest.mark.parametrize("kind", ["pixels", "dict"])
def test_persistence_round_trip(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(3)
    episodes = random_episodes(rng, 20, min_len=1)[:-1]
    writer = ReplayBuffer(SPACES[kind], ACTION, 60, frame_stack=K, n_step=3, gamma=GAMMA, directory=tmp_path, seed=5)
    ref = NaiveReplay(60, kind)
    play([writer, ref], episodes, kind)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"{i:06d}_{length}.npz" for i, (length, _) in enumerate(episodes)]
    state = torch.load(_saved(writer.state_dict()), weights_only=True)
    reader = ReplayBuffer(SPACES[kind], ACTION, 60, frame_stack=K, n_step=3, gamma=GAMMA, directory=tmp_path, seed=9)
    reader.load_state_dict(state)
    assert len(reader) == len(writer) and reader.num_frames == writer.num_frames
    for _ in range(3):
        a, b = writer.sample(128), reader.sample(128)
        for key in a:
            assert_obs_equal(b[key], a[key])
        a, b = writer.sample_sequences(64, 3), reader.sample_sequences(64, 3)
        for key in a:
            assert_obs_equal(b[key], a[key])
    check_transitions(reader, ref, kind, 3)
    # The restored buffer keeps writing (and numbering files) where the writer left off.
    play([reader], [(2, "truncated")], kind, s=ref.steps)
    assert (tmp_path / f"{len(episodes):06d}_2.npz").exists()


def test_restore_deletes_later_episodes(tmp_path: Path) -> None:
    episodes = [(4, "terminated"), (6, "truncated"), (3, "terminated"), (5, "truncated"), (2, "terminated")]
    writer = ReplayBuffer(PIXELS, ACTION, 12, frame_stack=K, n_step=2, directory=tmp_path, seed=1)
    twin = ReplayBuffer(PIXELS, ACTION, 12, frame_stack=K, n_step=2, seed=1)  # saw only the first 3 episodes
    s = play([writer, twin], episodes[:3], "pixels")
    state = writer.state_dict()
    assert state["num_episodes"] == 3
    play([writer], episodes[3:], "pixels", s=s)
    assert len(list(tmp_path.iterdir())) == 5
    reader = ReplayBuffer(PIXELS, ACTION, 12, frame_stack=K, n_step=2, directory=tmp_path, seed=0)
    reader.load_state_dict(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000_4.npz", "000001_6.npz", "000002_3.npz"]
    twin.load_state_dict(state)
    a, b = twin.sample(100), reader.sample(100)
    for key in a:
        np.testing.assert_array_equal(b[key], a[key])
    assert len(reader) == len(twin)


def _rewrite(path: Path, **changes) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def _zip_with(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name, data)


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "not a zip": lambda p: p.write_bytes(b"garbage" * 100),
    "bad zip member": lambda p: _zip_with(p, "obs.npy", b"\x93NUMPY nonsense"),
    "missing key": lambda p: _rewrite(p, reward=None),
    "wrong dtype": lambda p: _rewrite(p, obs=np.zeros((3, 3, H, W), np.float32)),
    "wrong shape": lambda p: _rewrite(p, action=np.zeros((2, 5), np.float32)),
    "length mismatch": lambda p: p.rename(p.with_name("000001_7.npz")),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_file_raises_naming_it(tmp_path: Path, corruption: str) -> None:
    writer = ReplayBuffer(PIXELS, ACTION, 100, frame_stack=K, directory=tmp_path)
    play([writer], [(3, "terminated"), (2, "truncated"), (4, "terminated")], "pixels")
    path = tmp_path / "000001_2.npz"
    CORRUPTIONS[corruption](path)
    name = "000001_7.npz" if corruption == "length mismatch" else path.name
    with pytest.raises(ValueError, match=re.escape(name)):
        ReplayBuffer(PIXELS, ACTION, 100, frame_stack=K, directory=tmp_path).restore(3)


def test_memory_per_transition() -> None:
    space = gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)
    buf = ReplayBuffer(space, gym.spaces.Box(-1, 1, (6,)), 1000, frame_stack=3)
    naive = 2 * 9 * 84 * 84 + 6 * 4 + 4 + 4  # obs + next_obs + action + reward + discount
    assert buf._frames["obs"].shape[1:] == (3, 84, 84)  # one frame per step
    assert buf.bytes_per_transition < 3 * 84 * 84 + 64
    assert naive / buf.bytes_per_transition > 5.98
    assert buf.memory_estimate() == "replay: 1,000 transitions x 21.21 kB = 21.21 MB"


def _saved(state: dict) -> io.BytesIO:
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return f


def _plain(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(map(_plain, x))
    return type(x) in (int, str, float, bool)


def test_state_dict_round_trip() -> None:
    buf = ReplayBuffer(SPACES["dict"], ACTION, 50, frame_stack=K, n_step=3, gamma=GAMMA, seed=0)
    play([buf], [(10, "terminated"), (8, "ongoing")], "dict")
    buf.sample(7)
    state = buf.state_dict()
    assert _plain(state)
    first = [buf.sample(16), buf.sample_sequences(4, 2)]
    buf.sample(33)
    buf.load_state_dict(torch.load(_saved(state), weights_only=True))
    again = [buf.sample(16), buf.sample_sequences(4, 2)]
    for a, b in zip(first, again):
        for key in a:
            assert_obs_equal(b[key], a[key])


def test_errors() -> None:
    buf = ReplayBuffer(PIXELS, ACTION, 10, frame_stack=K)
    with pytest.raises(RuntimeError):
        buf.add(np.zeros(2), 0.0, np.zeros((9, H, W), np.uint8), False, False)
    buf.add_first(np.zeros((9, H, W), np.uint8))
    assert len(buf) == 0
    with pytest.raises(ValueError):
        buf.sample(1)
    with pytest.raises(ValueError):
        ReplayBuffer(gym.spaces.Box(0, 255, (8, H, W), np.uint8), ACTION, 10, frame_stack=3)


def test_to_torch() -> None:
    buf = ReplayBuffer(SPACES["dict"], ACTION, 50, frame_stack=K, seed=0)
    play([buf], [(10, "terminated")], "dict")
    batch = to_torch(buf.sample(8), "cpu")
    assert batch["obs"]["pixels"].dtype == torch.uint8 and batch["obs"]["pixels"].shape == (8, 9, H, W)
    assert batch["obs"]["state"].dtype == torch.float32
    assert batch["reward"].dtype == batch["discount"].dtype == batch["action"].dtype == torch.float32
    seq = to_torch(buf.sample_sequences(8, 3), torch.device("cpu"))
    assert seq["terminated"].dtype == torch.bool and seq["obs"]["pixels"].shape == (8, 4, 9, H, W)
    assert to_torch(np.zeros(3, np.float64), "cpu").dtype == torch.float32


def test_a_gap_in_the_episode_files_is_an_error_that_deletes_nothing(tmp_path):
    space = gym.spaces.Box(-1, 1, (2,), np.float32)
    writer = ReplayBuffer(space, space, 100, frame_stack=1, directory=tmp_path)
    for _ in range(3):
        writer.add_first(np.zeros(2, np.float32))
        writer.add(np.zeros(2, np.float32), 0.0, np.ones(2, np.float32), True, False)
    second = sorted(tmp_path.glob("*.npz"))[1]
    second.unlink()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"missing .*\[1\]"):
        ReplayBuffer(space, space, 100, frame_stack=1, directory=tmp_path).restore()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # episode 2's file is still there


def test_sampling_too_early_says_how_many_steps_are_stored_and_needed():
    replay = ReplayBuffer(STATE, ACTION, capacity=10, frame_stack=1)
    with pytest.raises(ValueError, match=r"at least 1 stored step\(s\).*holds 0 step\(s\) in 0 episode"):
        replay.sample(4)
    replay.add_first(np.zeros(2, np.float32))
    replay.add(np.zeros(2, np.float32), 0.0, np.ones(2, np.float32), False, False)
    with pytest.raises(ValueError, match=r"at least 3 stored step\(s\).*holds 1 step\(s\) in 1 episode.*longest has 1"):
        replay.sample_sequences(2, 3)
