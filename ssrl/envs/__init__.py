"""Pixel and state environments: dm_control suite (`dmc/<domain>-<task>`), Gymnasium MuJoCo (`gym/<id>`) and,
when metaworld is installed, MetaWorld (`mw/<task>`, see `ssrl.envs.metaworld`).

Importing this package picks a headless GL backend (see `ssrl.envs.gl`); import it before
`mujoco` or `dm_control`.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import gymnasium as gym

from ssrl.envs import gl
from ssrl.envs.wrappers import ActionRepeat, FrameStack, PixelObservation

__all__ = ["default_action_repeat", "list_tasks", "make", "make_batched", "make_vec"]

gl.configure()

OBS_MODES = ("pixels", "state", "pixels+state")
RENDER_LOOKS = ("fast", "dmc")
# PlaNet / CURL action repeats; 4 for every other dm_control domain.
_DMC_ACTION_REPEAT = {"cartpole": 8, "finger": 2, "walker": 2}


@functools.cache
def _registry() -> dict[str, tuple[str, ...]]:
    """Maps each id to ("dmc", domain, task) or ("gym", gymnasium id)."""
    with gl.context_errors():  # dm_control binds its GL backend at import
        from dm_control import suite

    tasks: dict[str, tuple[str, ...]] = {f"dmc/{d}-{t}": ("dmc", d, t) for d, t in suite.ALL_TASKS}
    for gym_id, spec in gym.registry.items():
        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.mujoco"):
            tasks[f"gym/{gym_id}"] = ("gym", gym_id)
    return tasks


def list_tasks() -> list[str]:
    """All registered environment ids."""
    from ssrl.envs import metaworld

    return list(_registry()) + (metaworld.list_tasks() if metaworld.available() else [])


def _lookup(env_id: str) -> tuple[str, ...]:
    """The registry entry of `env_id`, or ValueError naming close matches."""
    if env_id.startswith("mw/"):
        return ("mw", env_id[3:])
    tasks = _registry()
    if env_id not in tasks:
        close = difflib.get_close_matches(env_id, tasks, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "ids start with 'dmc/' or 'gym/'"
        raise ValueError(f"Unknown env id {env_id!r}; {hint} (see ssrl.envs.list_tasks()).")
    return tasks[env_id]


def default_action_repeat(env_id: str) -> int:
    """The conventional action repeat: PlaNet/CURL's for dm_control tasks, 1 for Gymnasium tasks."""
    entry = _lookup(env_id)
    return _DMC_ACTION_REPEAT.get(entry[1], 4) if entry[0] == "dmc" else 1


def make(
    env_id: str,
    *,
    obs: str = "pixels",
    size: int = 84,
    camera: int | str | None = None,
    action_repeat: int | None = None,
    frame_stack: int = 3,
    seed: int | None = None,
    render: str = "fast",
    render_size: int | None = None,
) -> gym.Env[Any, Any]:
    """Creates an environment.

    Args:
        env_id: `dmc/<domain>-<task>` or `gym/<Gymnasium MuJoCo id>`; see `list_tasks()`.
        obs: "pixels" ((3*frame_stack, size, size) uint8), "state" (flat float32, not stacked)
            or "pixels+state" (a dict of both; only pixels are stacked).
        size: side of the agent's square pixel view.
        camera: camera id or name; default 0 for dm_control (2 for quadruped), the task's own for gym.
        action_repeat: physics steps per agent step; default `default_action_repeat(env_id)`.
        frame_stack: frames concatenated on the channel axis for pixel observations.
        seed: seeds the first reset.
        render: "fast" (no MSAA, shadows or reflections) or "dmc" (dm_control's default look,
            as in published CURL/DrQ results).
        render_size: side of `env.render()` frames (videos); default `size`. The offscreen buffer is
            sized to the larger of the two, and a buffer the size of the agent's view renders ~3x faster.

    `info` always holds "physics_state" (float64). `action_repeat` and `frame_stack` are
    readable through `env.get_wrapper_attr`.
    """
    entry = _lookup(env_id)
    if obs not in OBS_MODES:
        raise ValueError(f"obs must be one of {OBS_MODES}, got {obs!r}")
    if render not in RENDER_LOOKS:
        raise ValueError(f"render must be one of {RENDER_LOOKS}, got {render!r}")
    action_repeat = default_action_repeat(env_id) if action_repeat is None else action_repeat
    render_size = size if render_size is None else render_size
    for name, value in [("size", size), ("render_size", render_size), ("frame_stack", frame_stack),
                        ("action_repeat", action_repeat)]:  # fmt: skip
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    options = {"camera": camera, "size": size, "render_size": render_size, "render": render, "seed": seed}
    if entry[0] == "dmc":
        from ssrl.envs.dmc import DMCEnv

        base: Any = DMCEnv(entry[1], entry[2], **options)
    elif entry[0] == "mw":
        from ssrl.envs.metaworld import MetaWorldEnv

        base = MetaWorldEnv(entry[1], **options)
    else:
        from ssrl.envs.gym_mujoco import GymMujoco

        base = GymMujoco(entry[1], **options)
    env: gym.Env[Any, Any] = ActionRepeat(base, action_repeat)
    if obs != "state":
        env = FrameStack(PixelObservation(env, base.render_pixels, size, obs), frame_stack)
    return env


def make_vec(
    env_id: str, num_envs: int, *, vectorization: str = "async", **options: Any
) -> gym.vector.VectorEnv[Any, Any, Any]:
    """`num_envs` copies of `make(env_id, **options)`, sub-env i seeded with `seed + i`.

    "async" runs each in a worker process started with `spawn` (fork after a GL context hangs);
    "sync" steps them in this process.
    """
    if vectorization not in ("async", "sync"):
        raise ValueError(f"vectorization must be 'async' or 'sync', got {vectorization!r}")
    seed = options.pop("seed", None)
    env_fns = [
        functools.partial(make, env_id, **options, seed=None if seed is None else seed + i) for i in range(num_envs)
    ]
    if vectorization == "sync":
        return gym.vector.SyncVectorEnv(env_fns)
    return gym.vector.AsyncVectorEnv(env_fns, context="spawn")


def __getattr__(name: str) -> Any:
    """`make_batched` (batched dm_control tasks on torch, `ssrl.envs.batched`), imported on first use."""
    if name == "make_batched":
        from ssrl.envs.batched import make_batched

        return make_batched
    raise AttributeError(f"module 'ssrl.envs' has no attribute {name!r}")
