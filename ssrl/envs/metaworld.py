"""MetaWorld (v3) manipulation tasks, `mw/<task>` (e.g. `mw/reach-v3`), with scripted expert policies.

metaworld 3.1.1 pins `mujoco==3.3.0`; with the MuJoCo this package needs (3.17) one function breaks:
`SawyerMocapBase.reset_mocap_welds` writes 11 numbers into weld rows that are 12 wide. :func:`patch` replaces
that function with one that writes the same 11 values and keeps the 12th, so install metaworld without its
pin: ``pip install 'ssrl[robot]' && pip install --no-deps metaworld==3.1.1``.

Each reset draws the object/goal positions from the reset seed (goal-observable, as in R3M/VIP evaluations).
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from ssrl.envs import gl
from ssrl.envs.base import SingleEnv

INSTALL = "pip install 'ssrl[robot]' && pip install --no-deps metaworld==3.1.1"
DEFAULT_CAMERA = "corner"
# The weld row metaworld writes: anchor (3), relative position (3), relative quaternion (4), torque scale (1).
_WELD = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0])


def _reset_mocap_welds(self: Any) -> None:
    """metaworld's `reset_mocap_welds` for MuJoCo >= 3.3, whose weld rows have more than 11 entries."""
    import mujoco

    if self.model.nmocap > 0 and self.model.eq_data is not None:
        for i in range(self.model.eq_data.shape[0]):
            if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                self.model.eq_data[i, : _WELD.size] = _WELD


@functools.cache
def patch() -> Any:
    """Import metaworld with its mocap weld reset adapted to this MuJoCo; returns the module."""
    if not available():
        raise ImportError(f"MetaWorld tasks need metaworld: {INSTALL}")
    with gl.context_errors():  # metaworld imports mujoco's renderer
        import metaworld
        from metaworld import sawyer_xyz_env
    sawyer_xyz_env.SawyerMocapBase.reset_mocap_welds = _reset_mocap_welds
    return metaworld


def available() -> bool:
    """Whether metaworld can be imported (without importing it)."""
    return importlib.util.find_spec("metaworld") is not None


def list_tasks() -> list[str]:
    """`mw/<task>` for every MetaWorld v3 task that ships a scripted policy."""
    patch()
    from metaworld.policies import ENV_POLICY_MAP

    return [f"mw/{name}" for name in ENV_POLICY_MAP]


class MetaWorldEnv(SingleEnv, gym.Env[NDArray[np.float32], NDArray[np.float32]]):
    """A MetaWorld v3 task: 39-d float32 state, [-1, 1]^4 actions, `info["success"]` and `"physics_state"`.

    Episodes last `max_episode_steps` (MetaWorld's 500 by default); `render_pixels()` gives the agent's
    `size` view from `camera`, `render()` a `render_size` view for videos.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        *,
        camera: int | str | None = None,
        size: int = 84,
        render_size: int = 256,
        render: str = "fast",
        seed: int | None = None,
        max_episode_steps: int = 500,
    ) -> None:
        patch()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown MetaWorld task {task!r}; see ssrl.envs.metaworld.list_tasks()")
        env = ALL_V3_ENVIRONMENTS[task]()
        # What metaworld's goal-observable variants do, with goals drawn from `env.seed(...)` at each reset.
        env._partially_observable = False
        env._freeze_rand_vec = False
        env._set_task_called = True
        env.seeded_rand_vec = True
        env.__dict__.pop("sawyer_observation_space", None)  # cached while the goal was hidden
        self._env = env
        self.task, self.max_episode_steps = task, max_episode_steps
        self._camera = DEFAULT_CAMERA if camera is None else camera
        self._setup(env.model, size, render_size, render, seed)
        self._renderers: dict[int, Any] = {}
        self._steps = 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, env.action_space.shape, np.float32)

    @property
    def model(self) -> Any:
        return self._env.model

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """New object and goal positions, drawn from `seed` (or the constructor's seed, or fresh entropy)."""
        super().reset(seed=seed)
        seed = self._reset_seed(seed)
        self._env.seed(int(self.np_random.integers(2**31)) if seed is None else seed)
        obs, _ = self._env.reset()
        self._steps = 0
        self._last_obs = obs
        return obs.astype(np.float32), {"success": False, "physics_state": self._physics_state()}

    def step(self, action: Any) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        obs, reward, _, _, info = self._env.step(np.asarray(action, np.float32))
        self._steps += 1
        self._last_obs = obs
        out = {"success": bool(info["success"]), "physics_state": self._physics_state()}
        return obs.astype(np.float32), float(reward), False, self._steps >= self.max_episode_steps, out

    def expert_action(self) -> NDArray[np.float32]:
        """MetaWorld's scripted policy for this task at the current state."""
        from metaworld.policies import ENV_POLICY_MAP

        if not hasattr(self, "_expert"):
            self._expert = ENV_POLICY_MAP[self.task]()
        with warnings.catch_warnings():  # its controllers warn that their gains exceed the [-1, 1] action box
            warnings.simplefilter("ignore", UserWarning)
            action = self._expert.get_action(self._last_obs)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _render(self, size: int) -> NDArray[np.uint8]:
        import mujoco

        with gl.context_errors():
            if size not in self._renderers:
                self._renderers[size] = mujoco.Renderer(self._env.model, size, size)
            renderer = self._renderers[size]
            renderer.update_scene(self._env.data, camera=self._camera)
            return renderer.render()[::-1].copy()  # MetaWorld's cameras are mounted upside down

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self._env.close()

    def _physics_state(self) -> NDArray[np.float64]:
        return np.concatenate([self._env.data.qpos, self._env.data.qvel])
