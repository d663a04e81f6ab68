"""`BatchedEnv`: many envs of one dm_control task stepped together, torch tensors in and out."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch

from ssrl.envs.batched.backends import CpuSim
from ssrl.envs.batched.tasks import EPISODE_CONTROL_STEPS, Task


class BatchedEnv(gym.vector.VectorEnv[torch.Tensor, torch.Tensor, torch.Tensor]):
    """A Gymnasium-style vector env over a batched simulator, with torch tensors on `device`.

    - `step(actions)` takes a (num_envs, action_dim) tensor in [-1, 1] (mapped to the actuators'
      control ranges, not clipped, as dm_control does), repeats it `action_repeat` control steps
      and returns (obs, reward, terminated, truncated, info); rewards are summed over the repeats.
    - Autoreset is **same-step** (`gymnasium.vector.AutoresetMode.SAME_STEP`): an env whose episode
      ends is reset inside that `step`; the returned `obs` row is the new episode's first
      observation and `info["final_obs"]` holds every row's last observation of the finished
      episode (valid where `info["_final_obs"]`). No dummy transition follows an episode end.
    - Episode statistics: where an episode ends, `info["episode"]["r"]` (return) and `["l"]`
      (length in agent steps) hold its totals, with the mask `info["_episode"]`.
    - Episodes truncate after 1000 control steps (dm_control's time limits), i.e.
      ceil(1000 / action_repeat) agent steps; they terminate only when MuJoCo fails on an env.
    - Observations are flat float32 states, or with `pixels` (a renderer, `ssrl.envs.batched.render`)
      uint8 (num_envs, 3 * frame_stack, size, size) frame stacks, oldest frame first; a new episode's
      stack starts filled with its first frame, as `ssrl.envs.make(obs="pixels")` does.
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self,
        task: Task,
        sim: Any,
        init_sim: CpuSim,
        *,
        substeps: int,
        action_repeat: int,
        device: torch.device,
        seed: int | None = None,
        pixels: Any = None,
        frame_stack: int = 1,
    ) -> None:
        self.task, self.sim, self.init_sim, self.pixels = task, sim, init_sim, pixels
        self.frame_stack = frame_stack if pixels is not None else 1
        self.num_envs, self.device = sim.num_envs, device
        self.substeps, self.action_repeat = substeps, action_repeat
        self._host = device.type == "cpu"
        self._rng = np.random.default_rng(seed)
        model: mujoco.MjModel = sim.model
        low, high = model.actuator_ctrlrange.T
        limited = model.actuator_ctrllimited.astype(bool)
        center, scale = np.where(limited, (high + low) / 2, 0.0), np.where(limited, (high - low) / 2, 1.0)
        self._center, self._scale = self._sim_array(center), self._sim_array(scale)
        # Episode counters live with the simulator's arrays (numpy on the cpu backend, torch on warp).
        self._steps = self._sim_array(np.zeros(self.num_envs, np.int64))  # control steps
        self._return = self._sim_array(np.zeros(self.num_envs, np.float32))  # float32, as the step's rewards
        self._length = self._sim_array(np.zeros(self.num_envs, np.int64))  # agent steps
        self._may_end_early = EPISODE_CONTROL_STEPS % action_repeat != 0  # time limits inside an agent step
        self._reset_ids(np.arange(self.num_envs))
        self._records: dict[str, np.ndarray] | None = None  # fields the reward reads, per repeat (`CpuSim.repeat`)
        if isinstance(sim, CpuSim) and action_repeat > 1:
            tracer = _FieldTracer(sim)
            task.reward(tracer)
            if sim.rolls_out(tracer.names) or self.num_envs > sim.repeat_chunk():
                self._records = {name: np.empty((action_repeat, *sim.array(name).shape)) for name in tracer.names}
        self._stack = self._restart(self._observe())  # the current observation, stacked
        if pixels is None:
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, self._stack.shape[1:], np.float32)
        else:
            self.single_observation_space = gym.spaces.Box(0, 255, self._stack.shape[1:], np.uint8)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (model.nu,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._action_shape = tuple(self.action_space.shape)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Starts new episodes in every env; a seed reseeds the initial-state generator."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._reset_ids(np.arange(self.num_envs))
        for counter in (self._steps, self._return, self._length):
            counter[...] = 0
        self._stack = self._restart(self._observe())
        return self._stack, {}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One agent step of every env (see the class docstring for autoreset and statistics).

        Physics, rewards and counters stay in the simulator's arrays; what is returned is moved to `device`
        once per step. While no env fails and time limits fall on agent steps (action_repeat divides 1000),
        no per-env masks are kept within the repeats.
        """
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(actions)
        if actions.shape != self._action_shape:
            raise ValueError(f"actions: expected shape {self._action_shape}, got {tuple(actions.shape)}")
        xp, sim = self.sim.xp, self.sim
        sim.set_ctrl(self._sim_array(actions), self._scale, self._center)
        reward: Any = 0.0
        active = failed = early = final_obs = None  # masks, made when some env may end within the repeats
        repeats = range(self.action_repeat)
        records = None if self._may_end_early else self._records
        if records is not None and sim.repeat(self.substeps, self.action_repeat, records):
            for r in repeats:
                reward = reward + _float32(self.task.reward(_Recorded(sim, records, r)))
            repeats = range(0)  # done; after a failure (nothing stepped) the loop below ends the failed episodes
        for repeat in repeats:
            failed_ids = sim.step(self.substeps)
            if active is None and (len(failed_ids) or self._may_end_early):
                active, failed = self._mask(True), self._mask(False)
                self._steps += repeat  # the repeats so far, when every env ran
            if failed is not None and len(failed_ids):
                failed[self._sim_array(failed_ids)] = True
            if active is None:
                reward = reward + _float32(self.task.reward(sim))
                continue
            reward = reward + _float32(xp.where(active & ~failed, self.task.reward(sim), 0.0))
            self._steps += active
            ended = active & ((self._steps >= EPISODE_CONTROL_STEPS) | failed)
            active = active & ~ended
            if repeat < self.action_repeat - 1 and _any(ended):
                mask = self._tensor(ended)
                obs = self._observe(mask)
                final_obs = obs if final_obs is None else _where(mask, obs, final_obs)
                early = mask if early is None else early | mask
        if active is None:
            self._steps += self.action_repeat
            failed, truncated = self._mask(False), self._steps >= EPISODE_CONTROL_STEPS
            done = truncated
        else:
            truncated = (self._steps >= EPISODE_CONTROL_STEPS) & ~failed
            done = failed | truncated
        obs = self._observe(None if early is None else ~early)
        obs_last = self._push(obs if early is None else _where(early, final_obs, obs))
        self._return += reward
        self._length += 1
        info: dict[str, Any] = {}
        if _any(done):
            done_t = self._tensor(done)
            info["final_obs"], info["_final_obs"] = obs_last, done_t
            info["episode"] = {"r": self._tensor(self._return, float32=True).clone(),
                               "l": self._tensor(self._length).clone()}  # fmt: skip
            info["_episode"] = done_t
            ids = xp.where(done)[0]
            self._reset_ids(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids))
            obs_last = _where(done_t, self._restart(self._observe(done_t)), obs_last)
            self._steps[ids], self._return[ids], self._length[ids] = 0, 0.0, 0
        self._stack = obs_last
        return obs_last, self._tensor(reward, float32=True), self._tensor(failed), self._tensor(truncated), info

    def state_dict(self) -> dict[str, Any]:
        """What continues every env exactly (cpu backend): each env's MuJoCo integration state
        (`mujoco.batch.Batch.state`), the task's per-env tensors (reacher's targets), step/return/length
        counters, the initial-state generator and the current (stacked) observation. `{}` on the warp
        backend, whose episodes restart on resume."""
        if not isinstance(self.sim, CpuSim):
            return {}
        task = {key: torch.tensor(getattr(self.task, key)) for key in self.task.episode_state}
        return {
            "sim": torch.from_numpy(self.sim.batch.state.copy()),
            "task": task,
            "steps": torch.tensor(self._steps),
            "return": torch.tensor(self._return),
            "length": torch.tensor(self._length),
            "rng": self._rng.bit_generator.state,
            "obs": self._stack.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> torch.Tensor:
        """Inverse of `state_dict`; returns the current observation. The next step continues bit-exactly
        (`mujoco.batch` recomputes derived fields from the written state rows)."""
        if not isinstance(self.sim, CpuSim):
            raise ValueError("load_state_dict needs the cpu backend (warp episodes restart instead)")
        self.sim.batch.state[:] = state["sim"].numpy()
        for key, value in state["task"].items():
            getattr(self.task, key)[...] = value.numpy()
        self._steps[...] = state["steps"].numpy()
        self._return[...] = state["return"].numpy()
        self._length[...] = state["length"].numpy()
        self._rng.bit_generator.state = state["rng"]
        self._stack = state["obs"].to(self.device)
        return self._stack

    def close_extras(self, **kwargs: Any) -> None:
        """Stops the renderers and drops the simulators."""
        if self.pixels is not None:
            self.pixels.close()
        self.sim = self.init_sim = self.pixels = None

    def _reset_ids(self, ids: np.ndarray) -> None:
        """dm_control's reset for `ids`: mj_resetData, `initialize_episode`, `after_reset`."""
        self.init_sim.reset(ids)
        self.task.initialize(self.init_sim, ids, self._rng)
        self.init_sim.after_reset(ids)
        self.sim.load(self.init_sim, ids)

    def _observe(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Every env's current (unstacked) observation; with `mask`, only its rows are computed (others 0)."""
        if self.pixels is None:
            return self._tensor(self.task.observe(self.sim), float32=True)
        ids = np.arange(self.num_envs) if mask is None else torch.nonzero(mask).flatten().cpu().numpy()
        frames = self.pixels.render(self.sim, self.task, ids).to(self.device)
        if mask is None:
            return frames
        obs = torch.zeros((self.num_envs, *frames.shape[1:]), dtype=frames.dtype, device=self.device)
        obs[torch.as_tensor(ids, device=self.device)] = frames
        return obs

    def _push(self, obs: torch.Tensor) -> torch.Tensor:
        """The stack with `obs` appended as the newest frame (a new tensor; `obs` itself without stacking)."""
        if self.frame_stack == 1:
            return obs
        return torch.cat([self._stack[:, obs.shape[1] :], obs], 1)

    def _restart(self, obs: torch.Tensor) -> torch.Tensor:
        """A stack filled with `obs`, the first observation of an episode."""
        return obs.repeat(1, self.frame_stack, *[1] * (obs.dim() - 2)) if self.frame_stack > 1 else obs

    def _sim_array(self, x: Any) -> Any:
        """`x` (numpy, torch or a list) as an array of the simulator's type and device."""
        if self.sim.xp is np:
            if not isinstance(x, torch.Tensor):
                return np.asarray(x)
            try:
                return x.numpy()  # a CPU tensor without grad: no copy
            except (RuntimeError, TypeError):
                return x.detach().cpu().numpy()
        return torch.as_tensor(x, device=self.sim.device)

    def _mask(self, value: bool) -> Any:
        """A (num_envs,) boolean array of the simulator's type, every entry `value`."""
        if self.sim.xp is np:
            return np.ones(self.num_envs, bool) if value else np.zeros(self.num_envs, bool)
        return torch.full((self.num_envs,), value, device=self.sim.device)

    def _tensor(self, x: Any, float32: bool = False) -> torch.Tensor:
        """`x` (numpy or torch; as float32) as a torch tensor on `device`, sharing memory where it can."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x.astype(np.float32, copy=False) if float32 else x)
            return x if self._host else x.to(self.device)
        return (x.float() if float32 else x).to(self.device)


class _FieldTracer:
    """A simulator stand-in that notes the fields a task reads."""

    def __init__(self, sim: CpuSim) -> None:
        self.sim, self.xp, self.names = sim, sim.xp, []

    def array(self, name: str) -> np.ndarray:
        self.names.append(name)
        return self.sim.array(name)


class _Recorded:
    """The simulator's fields as `CpuSim.repeat` recorded them after repeat `r`."""

    xp = np

    def __init__(self, sim: CpuSim, records: dict[str, np.ndarray], r: int) -> None:
        self.model, self.num_envs, self._records, self._r = sim.model, sim.num_envs, records, r

    def array(self, name: str) -> np.ndarray:
        return self._records[name][self._r]


def _float32(x: Any) -> Any:
    """A numpy or torch array as float32: each repeat's rewards are summed in float32."""
    return x.float() if isinstance(x, torch.Tensor) else x.astype(np.float32)


def _any(mask: Any) -> bool:
    """Whether any entry of a numpy or torch boolean array is set (numpy's `count_nonzero`: a fifth of `.any()`)."""
    return bool(mask.any()) if isinstance(mask, torch.Tensor) else np.count_nonzero(mask) > 0


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rows of `a` where the (num_envs,) `mask` is set, else rows of `b`."""
    return torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)
