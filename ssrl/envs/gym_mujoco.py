"""A Gymnasium MuJoCo task with float32 state, `physics_state` info and an agent's pixel view."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from ssrl.envs import gl
from ssrl.envs.base import SingleEnv


class GymMujoco(SingleEnv, gym.Wrapper[NDArray[np.float32], NDArray[np.float32], Any, Any]):
    """`gymnasium.make(env_id)` with float32 observations and `"physics_state"` (qpos, qvel) in `info`.

    `render()` gives `render_size` frames for videos; `render_pixels()` the agent's `size` view
    from the same camera, through a second gymnasium `MujocoRenderer`.

    The free camera of tasks whose camera config names no `lookat` (Ant, InvertedPendulum, Pusher, ...) looks
    at the model's centre (`model.stat.center`, fixed when the model compiles), not where Gymnasium aims it:
    the median geom position at the first render, which depends on the first episode's seed. So a frame
    depends only on the physics state.
    """

    def __init__(
        self,
        env_id: str,
        *,
        camera: int | str | None = None,
        size: int = 84,
        render_size: int = 256,
        render: str = "fast",
        seed: int | None = None,
    ) -> None:
        from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

        cameras = {} if camera is None else {"camera_name" if isinstance(camera, str) else "camera_id": camera}
        env = gym.make(env_id, render_mode="rgb_array", width=render_size, height=render_size, **cameras)
        super().__init__(gym.wrappers.DtypeObservation(env, np.float32))
        base: Any = env.unwrapped
        if env.spec is not None and env.spec.max_episode_steps:
            self.max_episode_steps = float(env.spec.max_episode_steps)
        self._setup(base.model, size, render_size, render, seed)
        video = base.mujoco_renderer
        look = dict(video.default_cam_config or {})
        if video.camera_id in (None, -1) and "lookat" not in look:
            look["lookat"] = base.model.stat.center.copy()
        video.default_cam_config = look  # read when the viewer is made, at the first render
        self._pixels = MujocoRenderer(base.model, base.data, look, size, size, camera_id=video.camera_id)

    @property
    def spec(self) -> None:  # type: ignore[override]
        """None: built by `ssrl.envs.make`, so `gymnasium` cannot recreate it from a spec."""
        return None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Starts an episode, seeded by `seed` or, on the first reset, the constructor's seed."""
        observation, info = self.env.reset(seed=self._reset_seed(seed), options=options)
        return observation, {**info, "physics_state": self._physics_state()}

    def step(self, action: Any) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """One environment step, with `physics_state` added to `info`."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, float(reward), terminated, truncated, {**info, "physics_state": self._physics_state()}

    def _render(self, size: int) -> NDArray[np.uint8]:
        """The video renderer's frame (gymnasium's, at render_size) or the agent's view (a second renderer)."""
        renderer = self._pixels if size == self.size else self.unwrapped.mujoco_renderer  # type: ignore[attr-defined]
        if renderer.viewer is not None:  # two gymnasium renderers share a thread: make this one's GL context current
            renderer.viewer.make_context_current()
        with gl.context_errors():
            return renderer.render("rgb_array")

    def close(self) -> None:
        """Closes both renderers and the environment."""
        self._pixels.close()
        super().close()

    def _physics_state(self) -> NDArray[np.float64]:
        data = self.unwrapped.data  # type: ignore[attr-defined]
        return np.concatenate([data.qpos, data.qvel])
