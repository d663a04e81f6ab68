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
        self._rng = np.random.default_rng(seed)
        model: mujoco.MjModel = sim.model
        low, high = model.actuator_ctrlrange.T
        limited = model.actuator_ctrllimited.astype(bool)
        dtype = sim.tensor("qpos").dtype
        self._center = torch.as_tensor(np.where(limited, (high + low) / 2, 0.0), dtype=dtype, device=sim.device)
        self._scale = torch.as_tensor(np.where(limited, (high - low) / 2, 1.0), dtype=dtype, device=sim.device)
        self._reset_ids(np.arange(self.num_envs))
        self._stack = self._restart(self._observe())  # the current observation, stacked
        if pixels is None:
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, self._stack.shape[1:], np.float32)
        else:
            self.single_observation_space = gym.spaces.Box(0, 255, self._stack.shape[1:], np.uint8)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (model.nu,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._steps = torch.zeros(self.num_envs, dtype=torch.long, device=device)  # control steps
        self._return = torch.zeros(self.num_envs, device=device)
        self._length = torch.zeros(self.num_envs, dtype=torch.long, device=device)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Starts new episodes in every env; a seed reseeds the initial-state generator."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._reset_ids(np.arange(self.num_envs))
        self._steps.zero_()
        self._return.zero_()
        self._length.zero_()
        self._stack = self._restart(self._observe())
        return self._stack, {}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One agent step of every env (see the class docstring for autoreset and statistics)."""
        actions = torch.as_tensor(actions)
        if actions.shape != (self.num_envs, *self.single_action_space.shape):
            raise ValueError(
                f"actions: expected shape {(self.num_envs, *self.single_action_space.shape)}, "
                f"got {tuple(actions.shape)}"
            )
        self.sim.set_ctrl(self._center + self._scale * actions.to(self.sim.device, self._scale.dtype))
        reward = torch.zeros(self.num_envs, device=self.device)
        active = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        failed = torch.zeros_like(active)
        early = torch.zeros_like(active)  # episodes that ended before the last repeat
        final_obs: torch.Tensor | None = None  # their last observations (rows valid where `early`)
        for repeat in range(self.action_repeat):
            failed_ids = self.sim.step(self.substeps)
            if len(failed_ids):
                failed[torch.as_tensor(failed_ids, device=self.device)] = True
            reward += torch.where(active & ~failed, self._to_device(self.task.reward(self.sim)), 0.0)
            self._steps += active.long()
            ended = active & ((self._steps >= EPISODE_CONTROL_STEPS) | failed)
            active &= ~ended
            may_end = len(failed_ids) > 0 or EPISODE_CONTROL_STEPS % self.action_repeat != 0  # no GPU sync otherwise
            if repeat < self.action_repeat - 1 and may_end and bool(ended.any()):
                obs = self._observe(ended)
                final_obs = obs if final_obs is None else _where(ended, obs, final_obs)
                early |= ended
        obs = self._observe(None if final_obs is None else ~early)
        obs_last = self._push(obs if final_obs is None else _where(early, final_obs, obs))
        terminated = failed
        truncated = (self._steps >= EPISODE_CONTROL_STEPS) & ~failed
        self._return += reward
        self._length += 1
        info: dict[str, Any] = {}
        done = terminated | truncated
        if bool(done.any()):
            info["final_obs"], info["_final_obs"] = obs_last, done
            info["episode"] = {"r": self._return.clone(), "l": self._length.clone()}
            info["_episode"] = done
            ids = torch.nonzero(done).flatten()
            self._reset_ids(ids.cpu().numpy())
            obs_last = _where(done, self._restart(self._observe(done)), obs_last)
            self._steps[ids], self._return[ids], self._length[ids] = 0, 0.0, 0
        self._stack = obs_last
        return obs_last, reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """What continues every env exactly (cpu backend): each env's MuJoCo integration state
        (`mujoco.batch.Batch.state`), the task's per-env tensors (reacher's targets), step/return/length
        counters, the initial-state generator and the current (stacked) observation. `{}` on the warp
        backend, whose episodes restart on resume."""
        if not isinstance(self.sim, CpuSim):
            return {}
        task = {k: v.clone() for k, v in vars(self.task).items()
                if isinstance(v, torch.Tensor) and v.shape[:1] == (self.num_envs,)}
        return {"sim": torch.from_numpy(self.sim.batch.state.copy()), "task": task, "steps": self._steps.clone(),
                "return": self._return.clone(), "length": self._length.clone(),
                "rng": self._rng.bit_generator.state, "obs": self._stack.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> torch.Tensor:
        """Inverse of `state_dict`; returns the current observation. The next step continues bit-exactly
        (`mujoco.batch` recomputes derived fields from the written state rows)."""
        if not isinstance(self.sim, CpuSim):
            raise ValueError("load_state_dict needs the cpu backend (warp episodes restart instead)")
        self.sim.batch.state[:] = state["sim"].numpy()
        for key, value in state["task"].items():
            getattr(self.task, key).copy_(value)
        self._steps.copy_(state["steps"])
        self._return.copy_(state["return"])
        self._length.copy_(state["length"])
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
            return self._to_device(self.task.observe(self.sim))
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

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, torch.float32)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rows of `a` where the (num_envs,) `mask` is set, else rows of `b`."""
    return torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)
