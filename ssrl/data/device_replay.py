"""Replay for batched envs that lives on the training device: torch tensors laid out (steps, envs, ...)."""

from __future__ import annotations

import math
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ssrl.data.nstep import nstep
from ssrl.data.protocol import format_bytes, frame_layout
from ssrl.errors import ConfigError

Obs = torch.Tensor | dict[str, torch.Tensor]
Batch = dict[str, Any]
_FINAL_FRACTION = 64  # initial side buffer: one final observation per this many stored transitions (it grows)
_NO_STEP = -(2**62)  # step of an empty side-buffer slot


class DeviceReplay:
    """Circular buffer of ``capacity // num_envs`` vector steps of ``num_envs`` envs, on ``device``.

    Vector step ``t`` (slot ``t % capacity_steps``) holds, per env, the newest frame of the observation the
    agent acted on (the last ``C = channels // frame_stack`` channels of a uint8 image stack, the whole
    array otherwise), the action taken, the reward received, whether the episode ended there (terminated
    or truncated) and the step's index within its episode. A transition's next observation is step
    ``t+1`` of the same env, unless step ``t`` ended the episode: then it is the ``final_obs`` row the env
    returned (same-step autoreset), kept in a side buffer, so no dummy transition is stored. Frame stacks
    are rebuilt at sample time from the newest frames of steps ``t-k+1..t`` clamped to the episode's first
    step, which reproduces the single-env frame stack (the first frame repeated at an episode start).

    ``sample``/``sample_sequences`` return what :class:`ssrl.data.ReplayBuffer`'s do, as tensors on
    ``device``, drawn with a torch generator: index arithmetic and gathers only (no host copy, no loop
    per sample).
    """

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.spaces.Box,
        num_envs: int,
        capacity: int,
        *,
        device: str | torch.device = "cpu",
        frame_stack: int = 3,
        n_step: int = 1,
        gamma: float = 0.99,
        seed: int | None = None,
    ) -> None:
        """``obs_space``/``action_space`` are one env's; ``capacity`` counts transitions over all envs."""
        self.device = torch.device(device)
        self.num_envs = num_envs
        self.capacity_steps = capacity // num_envs
        if num_envs < 1 or n_step < 1 or frame_stack < 1:
            raise ValueError("need num_envs >= 1, n_step >= 1, frame_stack >= 1")
        self._dict_obs = isinstance(obs_space, gym.spaces.Dict)
        layout = frame_layout(obs_space, frame_stack)
        self._stack = {key: k for key, (k, _, _) in layout.items()}
        self._frame_shape = {key: (shape, torch.uint8 if dtype == np.uint8 else torch.float32)
                             for key, (_, shape, dtype) in layout.items()}
        self._max_stack = max(self._stack.values())
        if self.capacity_steps < self._max_stack + 1:
            raise ConfigError(f"replay_capacity={capacity} gives {self.capacity_steps} steps of {num_envs} envs; "
                              f"need at least {self._max_stack + 1} steps")
        self.action_shape = tuple(action_space.shape)
        self.n_step, self.gamma = n_step, gamma
        self._final_capacity = math.ceil(self.capacity_steps * num_envs / _FINAL_FRACTION) + num_envs
        check_fits(self.nbytes, self.device, "replay_capacity", self.memory_estimate())

        T, N = self.capacity_steps, num_envs
        self._obs = {key: self._zeros((T, N, *shape), dtype) for key, (shape, dtype) in self._frame_shape.items()}
        self._action = self._zeros((T, N, *self.action_shape), torch.float32)
        self._reward = self._zeros((T, N), torch.float32)
        self._done = torch.zeros((T, N), dtype=torch.bool, device=self.device)
        self._term = torch.zeros((T, N), dtype=torch.bool, device=self.device)
        self._ep_step = self._zeros((T, N), torch.int32)  # index of the step within its episode
        self._final_id = torch.zeros((T, N), dtype=torch.int64, device=self.device)  # where done: its final obs id
        # Side buffer of final observations, slot = id % size; grows when a slot is still referenced.
        self._final = {key: self._zeros((self._final_capacity, *shape), dtype)
                       for key, (shape, dtype) in self._frame_shape.items()}
        self._final_step = torch.full((self._final_capacity,), _NO_STEP, dtype=torch.int64, device=self.device)
        self._cur_ep_step = torch.zeros(N, dtype=torch.int32, device=self.device)
        self._next = 0  # absolute index of the next vector step to write
        self._num_finals = 0  # final observations written
        self._gen = torch.Generator(self.device)
        self.seed(seed)

    def _zeros(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Zero-filled storage: the unwritten slots a checkpoint holds are the same in every run."""
        return torch.zeros(shape, dtype=dtype, device=self.device)

    # ------------------------------------------------------------------ adding
    def add(self, obs: Obs, action: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
            truncated: torch.Tensor, final_obs: Obs | None = None) -> None:
        """Store one vector step: ``obs`` is what the agent acted on with ``action``; the rest is what
        ``env.step(action)`` returned (``final_obs`` = ``info["final_obs"]``, rows valid where done)."""
        t, i = self._next, self._next % self.capacity_steps
        obs = obs if self._dict_obs else {"obs": obs}
        for key, store in self._obs.items():
            store[i] = self._newest(key, obs[key])
        done = (torch.as_tensor(terminated, device=self.device) | torch.as_tensor(truncated, device=self.device))
        self._action[i] = torch.as_tensor(action, device=self.device).reshape(self.num_envs, *self.action_shape)
        self._reward[i] = torch.as_tensor(reward, device=self.device)
        self._done[i] = done
        self._term[i] = torch.as_tensor(terminated, device=self.device)
        self._ep_step[i] = self._cur_ep_step
        self._next = t + 1
        if bool(done.any()):
            if final_obs is None:
                raise ValueError("an episode ended: pass the env's info['final_obs'] as final_obs")
            self._add_finals(i, done, final_obs if self._dict_obs else {"obs": final_obs})
        self._cur_ep_step = torch.where(done, 0, self._cur_ep_step + 1).to(torch.int32)

    def end_episodes(self, final_obs: Obs) -> None:
        """Truncate every open episode at the last stored step, ``final_obs`` (the obs that followed it, as the
        env returned it) being its next observation: call it before the envs are reset outside ``step``."""
        if self._next == 0:
            return
        i = (self._next - 1) % self.capacity_steps
        open_ = ~self._done[i]
        self._done[i] |= open_
        if bool(open_.any()):
            self._add_finals(i, open_, final_obs if self._dict_obs else {"obs": final_obs})
        self._cur_ep_step.zero_()

    def _newest(self, key: str, x: torch.Tensor) -> torch.Tensor:
        channels = self._frame_shape[key][0][0]
        x = torch.as_tensor(x, device=self.device)
        return x[:, -channels:] if self._stack[key] > 1 else x

    def _add_finals(self, i: int, done: torch.Tensor, final_obs: dict[str, torch.Tensor]) -> None:
        envs = torch.nonzero(done).flatten()
        ids = torch.arange(self._num_finals, self._num_finals + len(envs), device=self.device)
        while True:  # grow the side buffer while a slot to overwrite still belongs to a stored step
            slots = ids % self._final_capacity
            if not bool((self._final_step[slots] > self._next - 1 - self.capacity_steps).any()):
                break
            self._grow_finals()
        for key, store in self._final.items():
            store[slots] = self._newest(key, final_obs[key])[envs]
        self._final_step[slots] = self._next - 1
        self._final_id[i, envs] = ids
        self._num_finals += len(envs)

    def _grow_finals(self) -> None:
        """Double the side buffer, moving each stored final observation to slot ``id % new size``."""
        old, size = self._final_capacity, 2 * self._final_capacity
        ids = torch.arange(max(0, self._num_finals - old), self._num_finals, device=self.device)
        for key, store in self._final.items():
            grown = self._zeros((size, *store.shape[1:]), store.dtype)
            grown[ids % size] = store[ids % old]
            self._final[key] = grown
        step = torch.full((size,), _NO_STEP, dtype=torch.int64, device=self.device)
        step[ids % size] = self._final_step[ids % old]
        self._final_step, self._final_capacity = step, size

    # ---------------------------------------------------------------- sampling
    @property
    def _last(self) -> int:
        """Absolute index of the newest stored step."""
        return self._next - 1

    @property
    def _lowest(self) -> int:
        """Oldest step whose whole frame stack is still stored."""
        oldest = max(0, self._next - self.capacity_steps)
        return oldest + self._max_stack - 1 if oldest > 0 else 0

    def _draw(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform (step, env) pairs with step in [lowest, last - 1] (every one has a next observation)."""
        lo, hi = self._lowest, self._last
        if hi <= lo:
            raise ValueError("no stored transition to sample yet")
        t = torch.randint(lo, hi, shape, generator=self._gen, device=self.device)
        env = torch.randint(0, self.num_envs, shape, generator=self._gen, device=self.device)
        return t, env

    def _rows(self, steps: torch.Tensor, env: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        steps, env = torch.broadcast_tensors(steps, env)
        return ((steps % self.capacity_steps) * self.num_envs + env).reshape(-1), steps.shape

    def _take(self, store: torch.Tensor, steps: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """``store[steps % T, env]`` (indices broadcast) as one ``index_select`` of rows of the flat buffer
        (6x faster on CPU than indexing the (T, N, C, H, W) tensor)."""
        rows, shape = self._rows(steps, env)
        rest = store.shape[2:]
        return store.view(len(store) * self.num_envs, -1).index_select(0, rows).view(*shape, *rest)

    def _frames(self, key: str, steps: torch.Tensor, env: torch.Tensor, ep_step: torch.Tensor,
                final: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Stacks at absolute ``steps`` (any shape; ``env``/``ep_step`` broadcast) from the frames of steps
        ``steps - min(j, ep_step)``, j = k-1..0, gathered by one ``index_select`` straight into the stacked
        layout. ``final = (mask, slot)``: where ``mask``, the newest frame is the side buffer's ``slot`` instead
        (copied over it; no ``torch.where`` over images, which is 5x slower on CPU)."""
        store, k = self._obs[key], self._stack[key]
        frame_shape = store.shape[2:]
        size = math.prod(frame_shape)
        back = torch.minimum(torch.arange(k - 1, -1, -1, device=self.device), ep_step[..., None])
        rows, shape = self._rows(steps[..., None] - back, env[..., None])
        out = store.new_empty((len(rows) + 1, size))
        torch.index_select(store.view(-1, size), 0, rows, out=out[:-1])
        if final is not None:
            mask, slot = final[0].reshape(-1), final[1].reshape(-1)
            newest = torch.arange(len(mask), device=self.device) * k + (k - 1)
            finals = self._final[key].view(-1, size)
            if out.is_cuda:  # sync-free: every row copies its final, those not ended into the spare row
                out.index_copy_(0, torch.where(mask, newest, len(rows)), finals.index_select(0, slot))
            else:  # on CPU a sync is free and index_copy_ of every row costs as much as the whole gather
                ended = mask.nonzero().flatten()
                out[newest[ended]] = finals.index_select(0, slot[ended])
        return out[:-1].view(*shape[:-1], k * frame_shape[0], *frame_shape[1:])

    def _obs_at(self, steps: torch.Tensor, env: torch.Tensor) -> Obs:
        ep = self._take(self._ep_step, steps, env)
        out = {key: self._frames(key, steps, env, ep) for key in self._obs}
        return out if self._dict_obs else out["obs"]

    def _obs_after(self, step: torch.Tensor, env: torch.Tensor) -> Obs:
        """The observation that followed ``step``: step+1's, or the episode's final one where ``step`` ended it."""
        done = self._take(self._done, step, env)
        ep = self._take(self._ep_step, step, env) + 1  # the next step's index in the episode (same or final)
        slot = torch.where(done, self._take(self._final_id, step, env), 0) % self._final_capacity
        out = {key: self._frames(key, step + 1, env, ep, (done, slot)) for key in self._obs}
        return out if self._dict_obs else out["obs"]

    def sample(self, batch_size: int, n_step: int | None = None) -> Batch:
        """Uniform batch of n-step transitions, truncated at episode ends (as ``ReplayBuffer.sample``; the
        arithmetic is :func:`ssrl.data.nstep.nstep`, with m also capped by the steps stored after t)."""
        n = self.n_step if n_step is None else n_step
        t, env = self._draw((batch_size,))
        steps = (t[:, None] + torch.arange(n, device=self.device)).clamp(max=self._last)  # (B, n)
        ends = self._take(self._done, steps, env[:, None])
        reward, discount, m = nstep(self._take(self._reward, steps, env[:, None]), ends,
                                    self._take(self._term, steps, env[:, None]), self._last - t, self.gamma)
        last = t + m - 1
        return {
            "obs": self._obs_at(t, env),
            "action": self._take(self._action, t, env),
            "reward": reward,
            "discount": discount,
            "next_obs": self._obs_after(last, env),
        }

    def sample_sequences(self, batch_size: int, length: int) -> Batch:
        """Uniform batch of contiguous sequences inside one episode (as ``ReplayBuffer.sample_sequences``):
        ``obs`` (B, length+1, ...), ``action`` (B, length, *A), ``reward`` (B, length), ``terminated``
        (B, length) bool, True where obs i+1 is a terminal state."""
        t = torch.empty(batch_size, dtype=torch.int64, device=self.device)
        env = torch.empty_like(t)
        todo = torch.ones(batch_size, dtype=torch.bool, device=self.device)
        i = torch.arange(length, device=self.device)
        tries = 4
        for _ in range(64):  # rejection: a draw is kept when its window lies in one stored episode
            ct, ce = self._draw((batch_size, tries))
            steps = ct[..., None] + i  # (B, tries, length)
            done = self._take(self._done, steps.clamp(max=self._last), ce[..., None])
            inside = ~done[..., :-1].any(-1) & ((ct + length <= self._last) | done[..., -1])
            inside &= ct + length - 1 <= self._last
            pick = inside.float().argmax(1)
            ok = inside.any(1) & todo
            t = torch.where(ok, ct.gather(1, pick[:, None])[:, 0], t)
            env = torch.where(ok, ce.gather(1, pick[:, None])[:, 0], env)
            todo &= ~ok
            if not bool(todo.any()):
                break
        else:
            raise ValueError(f"cannot sample sequences of {length} step(s) inside one episode: the replay holds "
                             f"{len(self)} step(s) ({max(0, self._last - self._lowest)} per env), none of them in "
                             f"an episode with {length} stored steps; add more steps first")
        steps, envs = t[:, None] + i, env[:, None]
        head = self._obs_at(steps, envs)
        tail = self._obs_after(steps[:, -1], env)
        if self._dict_obs:
            obs = {key: torch.cat([head[key], tail[key][:, None]], 1) for key in head}
        else:
            obs = torch.cat([head, tail[:, None]], 1)
        return {
            "obs": obs,
            "action": self._take(self._action, steps, envs),
            "reward": self._take(self._reward, steps, envs),
            "terminated": self._take(self._term, steps, envs) & self._take(self._done, steps, envs),
        }

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""
        return max(0, self._last - self._lowest) * self.num_envs

    # ------------------------------------------------------------------ memory
    @property
    def nbytes(self) -> int:
        """Bytes of all preallocated tensors (the side buffer at its current size)."""
        T, N = self.capacity_steps, self.num_envs
        per_step = sum(math.prod(shape) * _itemsize(dtype) for shape, dtype in self._frame_shape.values())
        per_step += 4 * math.prod(self.action_shape) + 4 + 1 + 1 + 4 + 8
        finals = sum(math.prod(shape) * _itemsize(dtype) for shape, dtype in self._frame_shape.values()) + 8
        return T * N * per_step + self._final_capacity * finals + 4 * N

    def memory_estimate(self) -> str:
        """Human-readable memory use at full capacity."""
        n = self.capacity_steps * self.num_envs
        return (f"replay on {self.device}: {self.capacity_steps:,} steps x {self.num_envs} envs = {n:,} transitions"
                f" x {format_bytes(self.nbytes / n)} = {format_bytes(self.nbytes)}")

    def seed(self, seed: int | None) -> None:
        """Restart the sampling random stream."""
        if seed is None:
            self._gen.seed()
        else:
            self._gen.manual_seed(seed)

    @property
    def rng_state(self) -> torch.Tensor:
        """The sampling random stream's state (set it to continue a stream)."""
        return self._gen.get_state()

    @rng_state.setter
    def rng_state(self, state: torch.Tensor) -> None:
        self._gen.set_state(state)

    # ------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Content (stored rows only), counters and the sampling generator's state."""
        rows = min(self._next, self.capacity_steps)
        return {
            "obs": {k: v[:rows].cpu() for k, v in self._obs.items()},
            "final": {k: v.cpu() for k, v in self._final.items()},
            **{name: getattr(self, f"_{name}")[:rows].cpu()
               for name in ("action", "reward", "done", "term", "ep_step", "final_id")},
            "final_step": self._final_step.cpu(),
            "cur_ep_step": self._cur_ep_step.cpu(),
            "next": self._next,
            "num_finals": self._num_finals,
            "generator": self._gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a replay with the same spaces, envs and capacity."""
        rows = min(state["next"], self.capacity_steps)
        if state["done"].shape[0] != rows or state["done"].shape[1] != self.num_envs:
            raise ValueError(f"replay state of shape {tuple(state['done'].shape)} does not fit "
                             f"{self.capacity_steps} steps x {self.num_envs} envs")
        for key, store in self._obs.items():
            store[:rows] = state["obs"][key].to(self.device)
        for name in ("action", "reward", "done", "term", "ep_step", "final_id"):
            getattr(self, f"_{name}")[:rows] = state[name].to(self.device)
        self._final = {k: v.to(self.device) for k, v in state["final"].items()}
        self._final_step = state["final_step"].to(self.device)
        self._final_capacity = len(self._final_step)
        self._cur_ep_step = state["cur_ep_step"].to(self.device)
        self._next, self._num_finals = state["next"], state["num_finals"]
        self._gen.set_state(state["generator"])


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(nbytes: int, device: torch.device, key: str, estimate: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``nbytes`` exceed 90% of the free memory on ``device``."""
    free = available_bytes(device)
    if nbytes > 0.9 * free:
        raise ConfigError(f"{estimate}: does not fit in the {format_bytes(free)} free on {device}; lower {key} "
                          f"(or the number of envs / image size)")
