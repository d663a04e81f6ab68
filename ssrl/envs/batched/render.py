"""Pixel observations of batched envs, drawn from their physics state.

- `GLPool`: MuJoCo's OpenGL renderer (`mujoco.Renderer`) with the look of `ssrl.envs.make(obs="pixels")`, on a
  pool of CPU renderers: one in this process (`workers=0`), or `workers` processes started with "spawn" (never
  fork after a GL context exists) that read env states from, and write frames into, torch shared-memory
  tensors, so nothing is pickled per step but the env ids. Each renderer owns a model copy and one MjData; per
  env it copies the scene fields (`scene_fields`: qpos, mocap poses, the task's per-episode model fields), runs
  the position stage that drawing needs (kinematics, centres of mass, tendons, cameras and lights) and draws.
  A backend on another device (MuJoCo Warp on CUDA) pays a host round trip of these fields each step.
- `WarpRenderer`: MuJoCo Warp's batch ray tracer (`mujoco_warp.render`), drawing every world on the sim's
  device with no host round trip; a different look (ray traced), see docs/batched.md.
"""

from __future__ import annotations

import copy
import traceback
import weakref
from multiprocessing.connection import Connection, wait
from typing import Any

import mujoco
import numpy as np
import torch

from ssrl.envs import gl


def resolve_camera(model: mujoco.MjModel, camera: int | str) -> int:
    """The id of a camera given by id or name, or ValueError naming it."""
    if isinstance(camera, str):
        try:
            return int(model.camera(camera).id)
        except KeyError as error:
            raise ValueError(f"camera: no camera named {camera!r}") from error
    if not -1 <= camera < model.ncam:
        raise ValueError(f"camera: the model has {model.ncam} cameras, got id {camera}")
    return camera


def scene_fields(sim: Any, task: Any) -> dict[str, torch.Tensor]:
    """Everything that decides what each env looks like, as (num_envs, ...) tensors on the sim's device."""
    fields = {"data.qpos": sim.tensor("qpos")}
    if sim.model.nmocap:
        fields |= {"data.mocap_pos": sim.tensor("mocap_pos"), "data.mocap_quat": sim.tensor("mocap_quat")}
    return fields | task.look()


class SceneRenderer:
    """One OpenGL renderer with its own model copy and MjData, drawing envs from their scene fields."""

    def __init__(self, model: mujoco.MjModel, size: int, camera: int, look: str) -> None:
        self.model = copy.deepcopy(model)
        gl.set_look(self.model, look, size)
        self.data = mujoco.MjData(self.model)
        self.camera = camera
        with gl.context_errors():
            self.renderer = mujoco.Renderer(self.model, size, size)

    def draw(self, scene: dict[str, np.ndarray], ids: np.ndarray, frames: np.ndarray) -> None:
        """Draws env i (for i in `ids`) from row i of the `scene` arrays into `frames[i]` (H, W, 3)."""
        model, data = self.model, self.data
        for i in ids:
            for key, values in scene.items():
                owner, name = key.split(".", 1)
                field = getattr(model if owner == "model" else data, name)
                field[...] = values[i].reshape(field.shape)
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)  # tracking cameras follow centres of mass
            mujoco.mj_tendon(model, data)
            mujoco.mj_camlight(model, data)
            self.renderer.update_scene(data, self.camera)
            self.renderer.render(out=frames[i])

    def close(self) -> None:
        """Frees the GL context."""
        self.renderer.close()


def _serve(conn: Connection, model: mujoco.MjModel, size: int, camera: int, look: str,
           scene: dict[str, torch.Tensor], frames: torch.Tensor) -> None:  # fmt: skip
    """A render worker: draws the env ids it receives; answers None when done or a traceback on failure."""
    try:
        renderer = SceneRenderer(model, size, camera, look)
        arrays, out = {key: value.numpy() for key, value in scene.items()}, frames.numpy()
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(traceback.format_exc())
        return
    conn.send(None)
    while True:
        try:
            ids = conn.recv()
        except EOFError:  # the parent is gone
            break
        if ids is None:
            break
        try:
            renderer.draw(arrays, ids, out)
            conn.send(None)
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(traceback.format_exc())
    renderer.close()


def _shutdown(workers: list[tuple[Any, Connection]]) -> None:
    """Asks the workers to stop, terminates those that do not within 5 s."""
    for _, conn in workers:
        try:
            conn.send(None)
        except OSError:  # already gone
            pass
    for process, conn in workers:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join()
        conn.close()
    workers.clear()


class GLPool:
    """Renders (num_envs, size, size) views of `model`'s envs with `workers` processes (0: in this process).

    Workers are daemons (ended with this process), stop on `close()` or garbage collection, and a worker
    that fails or dies raises a RuntimeError saying so in the next `render`.
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, size: int, camera: int, look: str,
                 fields: dict[str, torch.Tensor], workers: int = 0) -> None:  # fmt: skip
        self.scene = {key: torch.zeros(value.shape, dtype=torch.float64) for key, value in fields.items()}
        self.frames = torch.zeros((num_envs, size, size, 3), dtype=torch.uint8)
        self._local: SceneRenderer | None = None
        self._workers: list[tuple[Any, Connection]] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)
        if workers == 0:
            self._local = SceneRenderer(model, size, camera, look)
            return
        for tensor in (*self.scene.values(), self.frames):
            tensor.share_memory_()
        context = torch.multiprocessing.get_context("spawn")
        for _ in range(workers):
            conn, child = context.Pipe()
            process = context.Process(target=_serve, args=(child, model, size, camera, look, self.scene,
                                                            self.frames), daemon=True)  # fmt: skip
            process.start()
            child.close()
            self._workers.append((process, conn))
        for index in range(workers):
            self._receive(index)

    def render(self, sim: Any, task: Any, ids: np.ndarray) -> torch.Tensor:
        """(len(ids), 3, size, size) uint8 CPU views of envs `ids` in their current state."""
        index = torch.as_tensor(ids)
        for key, value in scene_fields(sim, task).items():
            self.scene[key][index] = value[index.to(value.device)].to("cpu", torch.float64)
        if self._local is not None:
            self._local.draw({key: value.numpy() for key, value in self.scene.items()}, ids, self.frames.numpy())
        else:
            chunks = np.array_split(ids, len(self._workers))
            for worker, chunk in enumerate(chunks):
                if len(chunk):
                    try:
                        self._workers[worker][1].send(chunk)
                    except OSError:  # a dead worker's pipe; _receive says how it ended
                        break
            for worker, chunk in enumerate(chunks):
                if len(chunk):
                    self._receive(worker)
        return self.frames[index].permute(0, 3, 1, 2)

    def _receive(self, worker: int) -> None:
        """Waits for worker `worker`'s answer; raises RuntimeError (and closes the pool) if it failed or died."""
        process, conn = self._workers[worker]
        try:
            error = conn.recv() if conn in wait([conn, process.sentinel]) else None
            died = error is None and not process.is_alive()
        except EOFError:
            died = True
        if died:
            process.join()
            error = f"exited with code {process.exitcode}"
        if error is not None:
            self.close()
            raise RuntimeError(f"Batched pixel render worker {worker} (pid {process.pid}) failed: {error}")

    def close(self) -> None:
        """Stops the workers and frees the GL context."""
        self._finalizer()
        if self._local is not None:
            self._local.close()
            self._local = None


class WarpRenderer:
    """MuJoCo Warp's batch ray tracer over every world of a `WarpSim`, on the sim's device.

    Warp places world geoms once, so the task's per-episode `model.geom_pos` of world geoms (reacher's
    target, `Task.look`) is written into their `geom_xpos` before drawing; no other look field is supported.
    """

    def __init__(self, sim: Any, task: Any, size: int, camera: int) -> None:
        if camera < 0:
            raise ValueError("camera: render='warp' draws model cameras only (id >= 0)")
        unsupported = set(task.look()) - {"model.geom_pos"}
        if unsupported:
            raise ValueError(f"render='warp' cannot draw per-episode {sorted(unsupported)}; use render='fast'")
        self.size = size
        self._world_geoms = torch.as_tensor(np.flatnonzero(sim.model.geom_bodyid == 0), device=sim.device)
        with sim._scope():
            self.context = sim._mjw.create_render_context(
                sim.model, nworld=sim.num_envs, cam_res=(size, size), render_rgb=True, render_depth=False,
                cam_active=[camera], render_skybox=True)  # fmt: skip

    def render(self, sim: Any, task: Any, ids: np.ndarray) -> torch.Tensor:
        """(len(ids), 3, size, size) uint8 views of envs `ids`, on the sim's device (every world is drawn)."""
        look = task.look()
        if "model.geom_pos" in look:
            geom_xpos = sim.tensor("geom_xpos")
            geom_xpos[:, self._world_geoms] = look["model.geom_pos"][:, self._world_geoms].to(geom_xpos.dtype)
        with sim._scope():
            sim._mjw.refit_bvh(sim._m, sim._d, self.context)
            sim._mjw.render(sim._m, sim._d, self.context)
        packed = sim._wp.to_torch(self.context.rgb_data)  # (num_envs, size * size) uint32, BGRA bytes
        bgra = packed.view(torch.uint8).view(sim.num_envs, self.size, self.size, 4)
        return bgra[torch.as_tensor(ids, device=bgra.device)][..., [2, 1, 0]].permute(0, 3, 1, 2)

    def close(self) -> None:
        """Drops the render context."""
        self.context = None
