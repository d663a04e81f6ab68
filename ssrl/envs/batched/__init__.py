"""Batched dm_control tasks: thousands of MuJoCo envs behind one Gymnasium-style vector env on torch.

    env = make_batched("dmc/cheetah-run", num_envs=1024, device="cpu")
    obs, info = env.reset(seed=0)                      # (1024, 17) float32 tensor
    obs, reward, terminated, truncated, info = env.step(torch.zeros(1024, 6))

Backends: "cpu" (MuJoCo C, `mujoco.batch` thread pool, float64 physics) and "warp" (MuJoCo Warp,
float32, CUDA or warp's CPU device; `pip install 'ssrl[gpu]'`). See `BatchedEnv` for autoreset and
episode statistics.
"""

from __future__ import annotations

import importlib.util

import mujoco
import torch

from ssrl.envs import default_action_repeat, gl
from ssrl.envs.batched.backends import CpuSim, WarpSim, make_sim
from ssrl.envs.batched.env import BatchedEnv
from ssrl.envs.batched.tasks import TASKS, Task

__all__ = ["BACKENDS", "BatchedEnv", "CpuSim", "Task", "WarpSim", "list_batched_tasks", "load_model", "make_batched"]

BACKENDS = ("auto", "cpu", "warp")


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
    task_cls.configure(model)
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
    if not isinstance(action_repeat, int) or action_repeat < 1:
        raise ValueError(f"action_repeat must be an integer >= 1, got {action_repeat!r}")

    domain, task_name = name.split("-", 1)
    model = load_model(env_id)
    task_cls, kwargs = TASKS[name]
    sim, init_sim = make_sim(model, num_envs, backend, device, num_threads)
    task = task_cls(model, num_envs, sim.device, **kwargs)
    with gl.context_errors():
        from dm_control import suite
    control_timestep = suite.load(domain, task_name).control_timestep()
    substeps = round(control_timestep / model.opt.timestep)
    return BatchedEnv(task, sim, init_sim, substeps=substeps, action_repeat=action_repeat, device=device, seed=seed)
