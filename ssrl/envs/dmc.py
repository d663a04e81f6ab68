"""A dm_control suite task as a Gymnasium environment (flat state observations)."""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from ssrl.envs import gl
from ssrl.envs.base import SingleEnv

# Known, harmless dm_control messages (through absl logging, once per env): cheetah.xml's `<compiler settotalmass>`
# is deprecated in MuJoCo >= 3.3, but dm_control 1.0.50 ships it and the published results used it.
KNOWN_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


class _KnownWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in KNOWN_WARNINGS)


def quiet_known_warnings() -> None:
    """Drop :data:`KNOWN_WARNINGS` from the ``absl`` logger dm_control writes MuJoCo's warnings to (idempotent)."""
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _KnownWarnings) for f in logger.filters):
        logger.addFilter(_KnownWarnings())


quiet_known_warnings()  # this module is what loads dm_control models (single envs, and batched envs' tasks)

# Cameras as used by CURL, DrQ and DrQ-v2: 0 everywhere except quadruped.
DEFAULT_CAMERA = {"quadruped": 2}


class DMCEnv(SingleEnv, gym.Env[NDArray[np.float32], NDArray[np.float32]]):
    """dm_control `domain`-`task` with a [-1, 1] action box and flat float32 state observations.

    Pixels are rendered on request only: `render_pixels()` gives the agent's `size` view,
    `render()` a `render_size` view from the same camera for videos. Every `info` holds
    `"physics_state"`, a copy of `physics.get_state()`.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        camera: int | str | None = None,
        size: int = 84,
        render_size: int = 256,
        render: str = "fast",
        seed: int | None = None,
    ) -> None:
        with gl.context_errors():  # dm_control binds its GL backend at import
            from dm_control import suite
        self._env = suite.load(domain, task)
        physics = self._env.physics
        camera = DEFAULT_CAMERA.get(domain, 0) if camera is None else camera
        if isinstance(camera, str):
            camera = _camera_id(physics, camera)
        if not -1 <= camera < physics.model.ncam:
            raise ValueError(f"camera: {domain} has {physics.model.ncam} cameras, got id {camera}")
        self._camera = camera
        self._setup(physics.model, size, render_size, render, seed)
        self._cameras: dict[int, Any] = {}
        self.max_episode_steps = float(getattr(self._env, "_step_limit", float("inf")))  # dm_control's time limit
        self.metadata = {**self.metadata, "render_fps": round(1 / self._env.control_timestep())}

        spec = self._env.action_spec()
        low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)
        high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)
        bounded = (low > -1e9) & (high < 1e9)  # lqr declares +-1e10, i.e. no bounds
        self._action_center = np.where(bounded, (high + low) / 2, 0.0)
        self._action_scale = np.where(bounded, (high - low) / 2, 1.0)
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        # The state vector's entries in order, name -> size (e.g. cartpole: position 3, velocity 2).
        self.state_layout = {k: int(np.prod(s.shape)) for k, s in self._env.observation_spec().items()}
        dim = sum(self.state_layout.values())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    @property
    def physics(self) -> Any:
        """The task's `dm_control.mujoco.Physics`."""
        return self._env.physics

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Starts an episode; a seed (or the constructor's, on the first reset) reseeds the task."""
        seed = self._reset_seed(seed)
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(int(self.np_random.integers(2**32)))
        time_step = self._env.reset()
        return self._state(time_step.observation), self._info()

    def step(
        self, action: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """One control step; a LAST step with discount 0 terminates, any other LAST truncates."""
        time_step = self._env.step(self._action_center + self._action_scale * action)
        terminated = time_step.last() and time_step.discount == 0
        truncated = time_step.last() and not terminated
        observation = self._state(time_step.observation)
        return observation, float(time_step.reward), bool(terminated), bool(truncated), self._info()

    def close(self) -> None:
        """Frees the physics and its rendering contexts; the env is unusable afterwards."""
        self._cameras.clear()
        self._env.physics.free()

    def _render(self, size: int) -> NDArray[np.uint8]:
        camera = self._cameras.get(size)
        if camera is None:
            from dm_control.mujoco import Camera

            with gl.context_errors():
                self.physics.contexts  # noqa: B018 - creates the GL context on first use
            camera = self._cameras[size] = Camera(self.physics, size, size, self._camera)
        return camera.render().copy()  # the camera reuses its buffer

    @staticmethod
    def _state(observation: dict[str, Any]) -> NDArray[np.float32]:
        return np.concatenate([np.asarray(v, np.float32).ravel() for v in observation.values()])

    def _info(self) -> dict[str, Any]:
        return {"physics_state": self._env.physics.get_state()}


def _camera_id(physics: Any, camera: str) -> int:
    """The id of a named camera, or ValueError."""
    try:
        return int(physics.model.name2id(camera, "camera"))
    except Exception as error:
        raise ValueError(f"camera: no camera named {camera!r}") from error
