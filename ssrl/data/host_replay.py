"""Replay buffer that stores each frame once, with n-step returns, sequences and episode files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ssrl.data import episodes
from ssrl.data.nstep import nstep
from ssrl.data.protocol import format_bytes, frame_layout
from ssrl.errors import DatasetError

Obs = np.ndarray | dict[str, np.ndarray]
Batch = dict[str, Any]


class ReplayBuffer:
    """Circular replay buffer over absolute, ever-increasing step indices.

    Step ``i`` (slot ``i % capacity``) holds the newest frame of observation ``i`` (the last
    ``shape[0] // frame_stack`` channels of stacked uint8 images, the whole array otherwise), the
    action taken at it and the reward received after that action (both zero at an episode's last
    step), the step convention of every replay (:mod:`ssrl.data.protocol`). An episode table holds each
    episode's first and last step and whether it terminated.
    Frame stacks are rebuilt at sample time from steps ``i-k+1..i`` clamped to the episode's first
    step, which reproduces the environment's stack. Transition ``t`` can be sampled when step
    ``t+1`` is in the same episode and every frame of ``obs_t``'s stack is still stored.

    With ``directory``, every finished episode is written to ``<index:06d>_<length>.npz``
    (``index`` counts saved episodes, ``length`` is its number of transitions) with arrays
    ``obs`` (or ``obs/<key>`` for dict spaces; newest frames, ``length+1`` rows), ``action``
    (``length`` rows), ``reward`` (``length``) and ``terminated`` (scalar bool).
    """

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.spaces.Box,
        capacity: int,
        *,
        frame_stack: int = 3,
        n_step: int = 1,
        gamma: float = 0.99,
        directory: str | Path | None = None,
        seed: int | None = None,
    ) -> None:
        if capacity < 2 or n_step < 1 or frame_stack < 1:
            raise ValueError("need capacity >= 2, n_step >= 1, frame_stack >= 1")
        self._dict_obs = isinstance(obs_space, gym.spaces.Dict)
        layout = frame_layout(obs_space, frame_stack)
        self._stack = {key: k for key, (k, _, _) in layout.items()}
        self._frames = {key: np.empty((capacity, *shape), dtype) for key, (_, shape, dtype) in layout.items()}
        self._max_stack = max(self._stack.values())
        self.capacity = capacity
        self.n_step = n_step
        self.gamma = gamma
        self.directory = None if directory is None else Path(directory)  # created when the first episode is saved
        self._action = np.empty((capacity, *action_space.shape), np.float32)
        self._reward = np.empty(capacity, np.float32)
        # Episode table, slot = episode index % capacity (at most `capacity` episodes are stored).
        self._ep_start = np.empty(capacity, np.int64)
        self._ep_last = np.empty(capacity, np.int64)
        self._ep_term = np.empty(capacity, bool)
        self._rng = np.random.default_rng(seed)
        self._clear()

    def _clear(self) -> None:
        self._next = 0  # absolute index of the next step to write
        self._num_eps = 0  # episodes started
        self._first_ep = 0  # oldest episode with a step still stored
        self._in_episode = False
        self._num_saved = 0  # episode files written (or restored)

    # ------------------------------------------------------------------ adding
    def add_first(self, obs: Obs) -> None:
        """Start a new episode with its reset observation (an unfinished previous one is dropped from disk)."""
        t = self._write(obs)
        e = self._num_eps % self.capacity
        self._ep_start[e] = self._ep_last[e] = t
        self._ep_term[e] = False
        self._num_eps += 1
        self._in_episode = True

    def add(self, action: np.ndarray, reward: float, next_obs: Obs, terminated: bool, truncated: bool) -> None:
        """Append one environment step; a finished episode is written to ``directory``."""
        if not self._in_episode:
            raise RuntimeError("call add_first() before add()")
        e = (self._num_eps - 1) % self.capacity
        i = (self._next - 1) % self.capacity  # the observation the action was taken at
        self._action[i] = action
        self._reward[i] = reward
        self._ep_last[e] = self._write(next_obs)
        if terminated or truncated:
            self._ep_term[e] = bool(terminated)
            self._in_episode = False
            if self.directory is not None:
                self._save(e)

    def _write(self, obs: Obs) -> int:
        """Store observation ``obs`` as the next step (no action taken at it yet); returns the step."""
        t, i = self._next, self._next % self.capacity
        obs = obs if self._dict_obs else {"obs": obs}
        for key, frames in self._frames.items():
            frames[i] = np.asarray(obs[key])[-frames.shape[1] :]
        self._action[i] = 0.0
        self._reward[i] = 0.0
        self._next = t + 1
        while self._first_ep < self._num_eps and self._ep_last[self._first_ep % self.capacity] < self._oldest:
            self._first_ep += 1
        return t

    # ---------------------------------------------------------------- sampling
    @property
    def _oldest(self) -> int:
        return max(0, self._next - self.capacity)

    def _episodes(self, span: int) -> tuple[np.ndarray, ...]:
        """Per stored episode: first step, last step, terminated, first sampleable step, count of windows t..t+span."""
        slots = np.arange(self._first_ep, self._num_eps) % self.capacity
        start, last, term = self._ep_start[slots], self._ep_last[slots], self._ep_term[slots]
        oldest = self._oldest
        first = np.where(start >= oldest, start, oldest + self._max_stack - 1)
        return start, last, term, first, np.maximum(last - first - span + 1, 0)

    def _draw(self, batch_size: int, span: int) -> tuple[np.ndarray, ...]:
        """Uniformly draw steps ``t`` such that ``t..t+span`` lie in one stored episode."""
        start, last, term, first, counts = self._episodes(span)
        ends = np.cumsum(counts)
        if not ends.size or ends[-1] == 0:
            stored = last - first  # steps (actions taken) still stored per episode
            raise ValueError(
                f"cannot sample yet: a window of {span} step(s) needs an episode with at least {span} stored "
                f"step(s), and the replay holds {int(stored.sum())} step(s) in {len(stored)} episode(s)"
                + (f" (the longest has {int(stored.max())})" if len(stored) else "")
                + "; add more steps first (add_first() then add() per step)")
        r = self._rng.integers(ends[-1], size=batch_size)
        ep = np.searchsorted(ends, r, side="right")
        t = first[ep] + r - (ends[ep] - counts[ep])
        return t, start[ep], last[ep], term[ep]

    def _obs(self, t: np.ndarray, start: np.ndarray) -> Obs:
        """Stacked observations at steps ``t`` (any shape); ``start`` broadcasts against ``t``."""
        out = {}
        for key, frames in self._frames.items():
            k = self._stack[key]
            idx = np.maximum(t[..., None] + np.arange(1 - k, 1), start[..., None]) % self.capacity
            stacked = frames[idx]  # (*t.shape, k, C, ...)
            out[key] = stacked.reshape(*t.shape, k * frames.shape[1], *frames.shape[2:])
        return out if self._dict_obs else out["obs"]

    def sample(self, batch_size: int, n_step: int | None = None) -> Batch:
        """Uniform batch of n-step transitions, truncated at episode ends.

        Returns ``obs``/``next_obs`` in the env's layout, ``action`` (B, *A) float32,
        ``reward`` (B,) float32 = sum_{i<m} gamma^i r_{t+i} and ``discount`` (B,) float32 =
        gamma^m (0 if the episode terminated within), where m = min(n_step, steps left)
        (:func:`ssrl.data.nstep.nstep`, in float64).
        """
        n = self.n_step if n_step is None else n_step
        t, start, last, term = self._draw(batch_size, 1)
        steps = t[:, None] + np.arange(n)  # the window t..t+n-1, clamped into the episode
        rewards = self._reward[np.minimum(steps, last[:, None] - 1) % self.capacity]
        reward, discount, m = nstep(torch.from_numpy(rewards.astype(np.float64)),
                                    torch.from_numpy(steps + 1 == last[:, None]),
                                    torch.from_numpy(term)[:, None].expand(-1, n),
                                    torch.from_numpy(last - t), self.gamma)
        return {
            "obs": self._obs(t, start),
            "action": self._action[t % self.capacity],
            "reward": reward.numpy().astype(np.float32),
            "discount": discount.numpy().astype(np.float32),
            "next_obs": self._obs(t + m.numpy(), start),
        }

    def sample_sequences(self, batch_size: int, length: int) -> Batch:
        """Uniform batch of contiguous sequences inside one episode.

        Returns ``obs`` (B, length+1, ...) in the env's layout, ``action`` (B, length, *A) float32
        (action i leads from obs i to obs i+1), ``reward`` (B, length) float32 (one-step rewards)
        and ``terminated`` (B, length) bool (True where obs i+1 is a terminal state).
        """
        t, start, last, term = self._draw(batch_size, length)
        steps = t[:, None] + np.arange(length + 1)
        acted = steps[:, :-1] % self.capacity
        return {
            "obs": self._obs(steps, start[:, None]),
            "action": self._action[acted],
            "reward": self._reward[acted],
            "terminated": (steps[:, 1:] == last[:, None]) & term[:, None],
        }

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""
        return int(self._episodes(1)[-1].sum())

    # ------------------------------------------------------------------ memory
    @property
    def num_frames(self) -> int:
        """Number of steps (frames) currently stored."""
        return min(self._next, self.capacity)

    @property
    def nbytes(self) -> int:
        """Bytes of all preallocated arrays."""
        arrays = [*self._frames.values(), self._action, self._reward, self._ep_start, self._ep_last, self._ep_term]
        return sum(a.nbytes for a in arrays)

    @property
    def bytes_per_transition(self) -> float:
        """Bytes per stored step, episode table included."""
        return self.nbytes / self.capacity

    def memory_estimate(self) -> str:
        """Human-readable memory use at full capacity."""
        per, total = format_bytes(self.bytes_per_transition), format_bytes(self.nbytes)
        return f"replay: {self.capacity:,} transitions x {per} = {total}"

    def seed(self, seed: int | None) -> None:
        """Restart the sampling random stream (replays of the same content with another batch order)."""
        self._rng = np.random.default_rng(seed)

    @property
    def rng_state(self) -> dict[str, Any]:
        """The sampling random stream's state (set it to continue a stream)."""
        return self._rng.bit_generator.state

    @rng_state.setter
    def rng_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state

    # ------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Sampling RNG state and number of episode files belonging to the buffer (plain Python types)."""
        return {"rng": self.rng_state, "num_episodes": self._num_saved}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the RNG; with a ``directory``, also rebuild the content from its episode files."""
        if self.directory is not None:
            self.restore(state["num_episodes"])
        self.rng_state = state["rng"]

    def restore(self, num_episodes: int | None = None) -> None:
        """Rebuild the buffer from episode files ``0..num_episodes-1`` (default: all) and delete later files.

        Only files with a step inside the last ``capacity`` steps are read; a malformed one raises ``ValueError``.
        """
        if self.directory is None:
            raise ValueError("restore() needs a directory")
        files = episodes.find(self.directory) if self.directory.is_dir() else {}
        n = len(files) if num_episodes is None else num_episodes
        if missing := sorted(set(range(n)) - files.keys()):  # checked first: a gap deletes nothing
            raise DatasetError(f"episode files missing in {self.directory}: indices {missing[:10]}")
        for index in [i for i in files if i >= n]:
            files.pop(index)[0].unlink()
        frames = np.array([files[i][1] + 1 for i in range(n)], np.int64)
        ends = np.cumsum(frames)
        self._clear()
        self._num_eps = self._num_saved = n
        self._next = int(ends[-1]) if n else 0
        self._first_ep = int(np.searchsorted(ends, self._oldest, side="right"))
        for index in range(self._first_ep, n):
            path, length = files[index]
            self._put_episode(index, int(ends[index] - frames[index]), episodes.read(path, self._layout(length)))

    def _layout(self, length: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Expected shape and dtype of each array in an episode file with ``length`` transitions."""
        layout = {
            (f"obs/{key}" if self._dict_obs else key): ((length + 1, *f.shape[1:]), f.dtype)
            for key, f in self._frames.items()
        }
        layout["action"] = (length, *self._action.shape[1:]), self._action.dtype
        layout["reward"] = (length,), self._reward.dtype
        layout["terminated"] = (), np.dtype(bool)
        return layout

    def _save(self, slot: int) -> None:
        start, last = int(self._ep_start[slot]), int(self._ep_last[slot])
        if start < self._oldest:
            raise ValueError(f"episode of {last - start + 1} steps exceeds capacity {self.capacity}; cannot save it")
        self.directory.mkdir(parents=True, exist_ok=True)
        idx = np.arange(start, last + 1) % self.capacity
        arrays = {
            (f"obs/{key}" if self._dict_obs else key): f[idx] for key, f in self._frames.items()
        } | {"action": self._action[idx[:-1]], "reward": self._reward[idx[:-1]], "terminated": self._ep_term[slot]}
        episodes.write(self.directory, self._num_saved, last - start, arrays)
        self._num_saved += 1

    def _put_episode(self, index: int, start: int, data: dict[str, np.ndarray]) -> None:
        """Write loaded episode ``index`` beginning at absolute step ``start``, skipping steps older than the buffer."""
        e = index % self.capacity
        length = len(data["reward"])
        self._ep_start[e], self._ep_last[e] = start, start + length
        self._ep_term[e] = data["terminated"]
        offset = max(0, self._oldest - start)
        slots = np.arange(start + offset, start + length + 1) % self.capacity
        for key, frames in self._frames.items():
            frames[slots] = data[f"obs/{key}" if self._dict_obs else key][offset:]
        action = np.concatenate([data["action"], np.zeros((1, *self._action.shape[1:]), np.float32)])
        self._action[slots] = action[offset:]
        self._reward[slots] = np.concatenate([data["reward"], [0.0]])[offset:]
