"""Batched dm_control tasks: thousands of MuJoCo envs behind one Gymnasium-style vector env on torch.

    env = make_batched("dmc/cheetah-run", num_envs=1024, device="cpu")
    obs, info = env.reset(seed=0)                      # (1024, 17) float32 tensor
    obs, reward, terminated, truncated, info = env.step(torch.zeros(1024, 6))
    env = make_batched("dmc/cheetah-run", num_envs=8, obs="pixels", size=84)   # (8, 9, 84, 84) uint8 stacks

Backends: "cpu" (MuJoCo C, `mujoco.batch` thread pool, float64 physics) and "warp" (MuJoCo Warp,
float32, CUDA or warp's CPU device; `pip install 'ssrl[gpu]'`). See `BatchedEnv` for autoreset and
episode statistics, and `ssrl.envs.batched.render` for pixel observations.
"""

from __future__ import annotations

import importlib.util

import mujoco
import torch

from ssrl.envs import RENDER_LOOKS, default_action_repeat, gl
from ssrl.envs.batched.backends import CpuSim, WarpSim, make_sim
from ssrl.envs.batched.env import BatchedEnv
from ssrl.envs.batched.render import GLPool, WarpRenderer, resolve_camera, scene_fields
from ssrl.envs.batched.tasks import TASKS, Task
from ssrl.envs.dmc import DEFAULT_CAMERA

__all__ = ["BACKENDS", "BatchedEnv", "CpuSim", "Task", "WarpSim", "list_batched_tasks", "load_model", "make_batched"]

BACKENDS = ("auto", "cpu", "warp")
OBS_MODES = ("state", "pixels")


def list_batched_tasks() -> list[str]:
    """Ids accepted by `make_batched`."""
    return [f"dmc/{name}" for name in TASKS]


def _task_name(env_id: str) -> str:
    """`domain-task` of a batched env id, or ValueError listing the batched ids."""
    name = env_id.removeprefix("dmc/")
    if not env_id.startswith("dmc/") or name not in TASKS:
        raise ValueError(f"Unknown batched env id {env_id!r}; choose one of {', '.join(list_batched_tasks())}")
    return name


def load_model(env_id: str) -> mujoco.MjModel:
    """The MuJoCo model of a batched task: dm_control's MJCF for it, with its once-only edits."""
    name = _task_name(env_id)
    task_cls, kwargs = TASKS[name]
    with gl.context_errors():  # dm_control binds its GL backend at import
        xml, assets = task_cls.mjcf(name.split("-")[0], **kwargs)
    model = mujoco.MjModel.from_xml_string(xml.decode() if isinstance(xml, bytes) else xml, assets)
    task_cls.configure(model, **kwargs)
    return model


def make_batched(
    env_id: str,
    num_envs: int,
    *,
    device: str | torch.device = "cpu",
    backend: str = "auto",
    action_repeat: int | None = None,
    seed: int | None = None,
    num_threads: int = 0,
    obs: str = "state",
    size: int = 84,
    frame_stack: int = 3,
    render: str = "fast",
    camera: int | str | None = None,
    render_workers: int = 0,
) -> BatchedEnv:
    """`num_envs` envs of a dm_control task, stepped in batch, with torch tensors on `device`.

    Args:
        env_id: `dmc/<domain>-<task>`; see `list_batched_tasks()`.
        num_envs: number of parallel envs.
        device: where observations, rewards and dones live and actions are read from.
        backend: "cpu" (MuJoCo C on a thread pool), "warp" (MuJoCo Warp on `device`), or "auto":
            warp when `device` is CUDA and mujoco-warp is installed, else cpu.
        action_repeat: control steps per agent step; default `ssrl.envs.default_action_repeat`.
        seed: seeds the initial-state generator.
        num_threads: CPU threads of the cpu backend (and of episode initialisation); 0 = all.
        obs: "state" (flat float32) or "pixels" (uint8 (3 * frame_stack, size, size) stacks, oldest first,
            the views of `ssrl.envs.make(env_id, obs="pixels", ...)`).
        size, frame_stack, camera: pixel view side, frames per stack, camera id or name (default 0, 2 for
            quadruped, as `ssrl.envs.make`).
        render: "fast" or "dmc" (the looks of `ssrl.envs.make`, drawn by MuJoCo's OpenGL renderer on CPU
            renderers), or "warp" (MuJoCo Warp's batch ray tracer on the warp backend's device; another look).
        render_workers: OpenGL renderer processes (started with "spawn"); 0 renders in this process.
    """
    name = _task_name(env_id)
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        backend = "warp" if device.type == "cuda" and importlib.util.find_spec("mujoco_warp") else "cpu"
    action_repeat = default_action_repeat(env_id) if action_repeat is None else action_repeat
    if obs not in OBS_MODES:
        raise ValueError(f"obs must be one of {OBS_MODES}, got {obs!r}")
    if render not in (*RENDER_LOOKS, "warp"):
        raise ValueError(f"render must be one of {(*RENDER_LOOKS, 'warp')}, got {render!r}")
    for key, value, low in [("action_repeat", action_repeat, 1), ("size", size, 1), ("frame_stack", frame_stack, 1),
                            ("render_workers", render_workers, 0)]:  # fmt: skip
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    if obs == "pixels" and render == "warp" and backend != "warp":
        raise ValueError(f"render='warp' needs backend='warp', got backend={backend!r}")

    domain, task_name = name.split("-", 1)
    model = load_model(env_id)
    task_cls, kwargs = TASKS[name]
    sim, init_sim = make_sim(model, num_envs, backend, device, num_threads)
    task = task_cls(sim, **kwargs)
    with gl.context_errors():
        from dm_control import suite
    control_timestep = suite.load(domain, task_name).control_timestep()
    substeps = round(control_timestep / model.opt.timestep)
    pixels = None
    if obs == "pixels":
        camera_id = resolve_camera(model, DEFAULT_CAMERA.get(domain, 0) if camera is None else camera)
        if render == "warp":
            pixels = WarpRenderer(sim, task, size, camera_id)
        else:
            pixels = GLPool(model, num_envs, size, camera_id, render, scene_fields(sim, task), render_workers)
    return BatchedEnv(task, sim, init_sim, substeps=substeps, action_repeat=action_repeat, device=device, seed=seed,
                      pixels=pixels, frame_stack=frame_stack)  # fmt: skip
