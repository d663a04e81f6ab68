"""Batched MuJoCo simulators behind one small interface, with live torch views of their fields.

Both backends step like dm_control's `Physics.step` (its "legacy step"): after a step, position- and
velocity-dependent fields (xpos, xmat, sensors up to the velocity stage) describe the new state, and
acceleration-stage sensors (touch) the state before the last substep.

- `CpuSim`: MuJoCo C, `mujoco.batch.Batch` (one persistent MjData per env on a thread pool; bit-identical
  to stepping each MjData alone). Its fields are float64 numpy arrays that torch tensors share.
- `WarpSim`: MuJoCo Warp (float32, CUDA or warp's CPU device); fields are zero-copy torch tensors.

Episode initialisation (dm_control's `initialize_episode`: random joints, rejection of penetrating
states, settling steps) always runs on a `CpuSim`; `WarpSim.load` copies the new states in.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

import mujoco
import mujoco.batch
import numpy as np
import torch

REPEAT_CACHE_BYTES = 1 << 19  # MjData bytes a thread steps through all action repeats at a time (`CpuSim.repeat`)

# `CpuSim.repeat` reads these from a rollout: state fields (recorded after each substep) and derived fields of the
# position and velocity stages (recorded for the state before each substep), sensordata per sensor stage.
_STATE_FIELDS = frozenset(mujoco.batch._STATE_FIELDS)
_ROLLOUT_FIELDS = _STATE_FIELDS | {"xpos", "xquat", "xmat", "xipos", "ximat", "geom_xpos", "geom_xmat", "site_xpos",
                                   "site_xmat", "subtree_com", "sensordata"}

# Sensor types whose position- or velocity-stage values read contacts or constraints (or that MuJoCo cannot see
# into): a model with none of them gets its forward after a rollout without collision and constraints.
_CONSTRAINED_SENSORS = [int(getattr(mujoco.mjtSensor, f"mjSENS_{name}")) for name in (
    "CONTACT", "TACTILE", "JOINTLIMITPOS", "JOINTLIMITVEL", "TENDONLIMITPOS", "TENDONLIMITVEL", "PLUGIN", "USER")]
_LEAN = mujoco.mjtDisableBit.mjDSBL_CONTACT | mujoco.mjtDisableBit.mjDSBL_CONSTRAINT

# Fields the tasks read, with their shape per env (-1: flattened by the backend's own layout).
_MAT_FIELDS = ("xmat", "geom_xmat", "site_xmat", "ximat")


class CpuSim:
    """`num_envs` simulations of `model` on MuJoCo C's batch thread pool (`num_threads` 0: all CPUs).

    The batch is persistent (one MjData per env): with MjData shared between envs, quantities computed
    lazily for sensors (subtree velocities behind the `subtreelinvel` sensors of cheetah, walker,
    hopper, humanoid) are skipped when another env already computed them, so rewards would be wrong.
    Sharing is up to ~2.7x faster on plain physics, but not correct for these tasks.
    """

    device = torch.device("cpu")
    xp = np  # the array module of `array`

    def __init__(self, model: mujoco.MjModel, num_envs: int, num_threads: int = 0) -> None:
        self.model = model
        self.num_envs = num_envs
        # no more threads than envs: an idle pool thread still costs a wake-up per call
        threads = min(num_threads or os.cpu_count() or 1, num_envs)
        self.batch = mujoco.batch.Batch(model, num_envs, threads, persistent=True)
        self._chunk = 0  # `repeat_chunk()`, measured on first use
        self._recorded: dict[str, np.ndarray] | None = None  # `repeat`'s rollout records, reused
        acc = model.sensor_needstage == mujoco.mjtStage.mjSTAGE_ACC
        self._acc_sensors = np.repeat(acc, model.sensor_dim)  # sensordata columns of the acceleration stage
        self._arrays: dict[str, np.ndarray] = {}
        self._views: dict[str, torch.Tensor] = {}
        # dm_control computes a reset state with actuation disabled; that matters only for actuators
        # with a bias (position servos) or activation, whose force is not zero at ctrl = 0.
        self._reset_unactuated = bool((model.actuator_biastype != 0).any() or model.na > 0)
        self._disableflags = self.batch.expand("opt.disableflags")  # per env (measured: no cost to stepping)
        before_acc = model.sensor_needstage != mujoco.mjtStage.mjSTAGE_ACC
        self._lean_forward = not np.isin(model.sensor_type[before_acc], _CONSTRAINED_SENSORS).any()

    def array(self, name: str) -> np.ndarray:
        """A live (num_envs, ...) float64 numpy view of an MjData field (matrices as (..., 9))."""
        if name not in self._arrays:
            self._arrays[name] = self.batch.bind(name)
        return self._arrays[name]

    def tensor(self, name: str) -> torch.Tensor:
        """A live torch view of `array(name)` (shares memory)."""
        if name not in self._views:
            with warnings.catch_warnings():  # derived fields are read-only arrays; the tasks only read them
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                self._views[name] = torch.from_numpy(self.array(name))
        return self._views[name]

    def reset(self, ids: np.ndarray) -> None:
        """mj_resetData on `ids` without computing anything; write the state, then `forward(ids)`."""
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)

    def after_reset(self, ids: np.ndarray) -> np.ndarray:
        """dm_control's `Physics.after_reset`: mj_forward of `ids` with actuation disabled.

        Returns the ids MuJoCo failed on (e.g. a full contact buffer when a body starts in the floor).
        """
        if self._reset_unactuated:
            self._disableflags[ids] = self.model.opt.disableflags | mujoco.mjtDisableBit.mjDSBL_ACTUATION
        try:
            self.batch.forward(ids)
            failed = np.zeros(0, np.int64)
        except mujoco.batch.SimulationError as error:
            failed = np.asarray(error.ids)
        if self._reset_unactuated:
            self._disableflags[ids] = self.model.opt.disableflags
        return failed

    def settle(self, ids: np.ndarray, nstep: int) -> None:
        """`nstep` plain mj_steps of `ids` (dm_control's `physics.step(n)` during initialisation)."""
        self.batch.step(ids, nstep=nstep)

    def step(self, nstep: int, ids: np.ndarray | None = None) -> np.ndarray:
        """Advances every env (or `ids`) `nstep` substeps with its current ctrl; returns the ids that failed.

        MuJoCo errors (`mujoco.batch.SimulationError`) leave a failed env's state as it was; the
        caller ends those episodes.
        """
        try:
            self.batch.step(ids, nstep=nstep, stage=mujoco.mjtStage.mjSTAGE_VEL)
        except mujoco.batch.SimulationError as error:
            return np.asarray(error.ids)
        return np.zeros(0, np.int64)

    def repeat_chunk(self) -> int:
        """Envs that `repeat` steps through every repeat at a time: as many as fit `REPEAT_CACHE_BYTES` a thread,
        from env 0's MjData footprint (its buffer and the arena it has used so far)."""
        if self._chunk == 0:
            data = self.batch.get_data(0)
            per_thread = max(1, REPEAT_CACHE_BYTES // (data.nbuffer + data.maxuse_arena))
            self._chunk = per_thread * self.batch.nthread
        return self._chunk

    def rolls_out(self, names: Iterable[str]) -> bool:
        """Whether `repeat` records `names` from one `Batch.rollout`: Euler or implicit integrators only (an RK4
        step leaves the derived fields of its last stage, not of the state it started from) and only fields
        whose stage is known (`_ROLLOUT_FIELDS`)."""
        return self.model.opt.integrator != mujoco.mjtIntegrator.mjINT_RK4 and set(names) <= _ROLLOUT_FIELDS

    def repeat(self, nstep: int, repeats: int, records: dict[str, np.ndarray]) -> bool:
        """`repeats` calls of `step(nstep)`; after repeat r, the fields named in `records` are copied into
        `records[name][r]` ((repeats, num_envs, ...) arrays). False (nothing stepped) if MuJoCo failed: every
        env's state is then restored to before the call, for the caller to step it repeat by repeat.

        Each `mujoco.batch` call sweeps its envs' MjData through the cache and synchronises the thread pool, so
        the repeats run in as few calls as the fields allow: one `Batch.rollout` of every substep and one
        forward to the velocity stage (`rolls_out`), else chunk by chunk (`repeat_chunk()` envs through every
        repeat at a time, as one call of all repeats would). Bit-identical to calling `step(nstep)` repeats
        times, except that a rollout stops stepping an env whose warning counters rise (MuJoCo reset a diverged
        state, or a buffer ran full) until the call ends, where `step` goes on stepping.
        """
        saved = self.batch.state.copy()
        try:
            if self.rolls_out(records):
                self._rollout(nstep, repeats, records)
            else:
                self._chunked(nstep, repeats, records)
        except mujoco.batch.SimulationError:
            self.batch.state[:] = saved  # the next call recomputes derived fields from these rows
            return False
        return True

    def _rollout(self, nstep: int, repeats: int, records: dict[str, np.ndarray]) -> None:
        """Record after substep j holds the state after it and the derived fields of the state before it
        (as `mj_step` leaves them); the last repeat's position and velocity stages come from a forward. That
        forward skips collision and constraints unless a sensor before the acceleration stage reads them: no field
        `rolls_out` allows depends on them, and the next `mj_step` computes its own (~1/3 of a cheetah-run
        forward's cost without contacts)."""
        self._recorded = self.batch.rollout(nstep * repeats, record=list(records), out=self._recorded)
        if self._lean_forward:
            self._disableflags[:] = self.model.opt.disableflags | _LEAN
        try:
            self.batch.forward(None, stage=mujoco.mjtStage.mjSTAGE_VEL)
        finally:
            self._disableflags[:] = self.model.opt.disableflags
        last = np.arange(1, repeats + 1) * nstep - 1  # each repeat's last substep
        for name, record in records.items():
            rows = self._recorded[name]
            if name in _STATE_FIELDS:
                record[:] = rows[:, last].swapaxes(0, 1)
                continue
            record[:-1] = rows[:, last[:-1] + 1].swapaxes(0, 1)  # derived fields of the state after the repeat
            record[-1] = self.array(name)
            if name == "sensordata" and self._acc_sensors.any():  # computed before the last substep, as in step()
                record[..., self._acc_sensors] = rows[:, last][..., self._acc_sensors].swapaxes(0, 1)

    def _chunked(self, nstep: int, repeats: int, records: dict[str, np.ndarray]) -> None:
        """`repeat_chunk()` envs at a time through every repeat (4 calls of one cheetah-run substep cost ~1.4x
        one call of 4 at 256 envs)."""
        chunk = self.repeat_chunk()
        for start in range(0, self.num_envs, chunk):
            rows = slice(start, min(start + chunk, self.num_envs))
            ids = None if chunk >= self.num_envs else np.arange(rows.start, rows.stop, dtype=np.int32)
            for r in range(repeats):
                self.batch.step(ids, nstep=nstep, stage=mujoco.mjtStage.mjSTAGE_VEL)
                for name, record in records.items():
                    record[r, rows] = self.array(name)[rows]

    def set_ctrl(self, actions: np.ndarray, scale: np.ndarray, center: np.ndarray) -> None:
        """Writes every env's controls, `center + scale * actions`."""
        ctrl = self.array("ctrl")
        np.multiply(actions, scale, out=ctrl)
        ctrl += center

    def load(self, source: CpuSim, ids: np.ndarray) -> None:
        """Nothing to do: a CPU backend initialises episodes in place (`source is self`)."""
        assert source is self


class WarpSim:
    """`num_envs` worlds of `model` in MuJoCo Warp on `device` ("cuda" or "cpu", i.e. warp's CPU device).

    Raises ImportError naming the `gpu` extra when mujoco-warp is not installed.
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, device: str | torch.device = "cuda") -> None:
        try:
            import mujoco_warp as mjw
            import warp as wp
        except ImportError as error:
            raise ImportError(
                "backend='warp' needs MuJoCo Warp: pip install 'ssrl[gpu]' (mujoco-warp, warp-lang)"
            ) from error
        self.device = torch.device(device)
        self.xp = torch  # the array module of `array`
        self.model = model
        self.num_envs = num_envs
        self._mjw, self._wp = mjw, wp
        self._wp_device = "cpu" if self.device.type == "cpu" else f"cuda:{self.device.index or 0}"
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        with wp.ScopedDevice(self._wp_device):
            self._m = mjw.put_model(model)
            self._d = mjw.put_data(model, data, nworld=num_envs)
        self._views: dict[str, torch.Tensor] = {}
        self._graphs: dict[int, Any] = {}

    def tensor(self, name: str) -> torch.Tensor:
        """A zero-copy (num_envs, ...) float32 torch view of a Warp Data field (matrices as (..., 9))."""
        if name not in self._views:
            view = self._wp.to_torch(getattr(self._d, name))
            if name in _MAT_FIELDS:
                view = view.reshape(self.num_envs, -1, 9)
            self._views[name] = view
        return self._views[name]

    array = tensor  # the tasks' name for it, shared with `CpuSim.array`

    def set_ctrl(self, actions: torch.Tensor, scale: torch.Tensor, center: torch.Tensor) -> None:
        """Writes every world's controls, `center + scale * actions`."""
        self.tensor("ctrl").copy_(center + scale * actions)

    def step(self, nstep: int) -> np.ndarray:
        """dm_control's legacy step: mj_step2 (mj_step for RK4), nstep-1 mj_steps, mj_step1.

        On CUDA the kernels run on torch's current stream, captured once per `nstep` as a CUDA graph.
        Failures are not detected.
        """
        with self._scope():
            if self.device.type != "cuda":
                self._step(nstep)
            else:
                if nstep not in self._graphs:
                    with self._wp.ScopedCapture() as capture:
                        self._step(nstep)
                    self._graphs[nstep] = capture.graph
                self._wp.capture_launch(self._graphs[nstep])
        return np.zeros(0, np.int64)

    def _step(self, nstep: int) -> None:
        rk4 = self.model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
        (self._mjw.step if rk4 else self._mjw.step2)(self._m, self._d)
        for _ in range(nstep - 1):
            self._mjw.step(self._m, self._d)
        self._mjw.step1(self._m, self._d)

    def _scope(self) -> Any:
        """Warp's device, and on CUDA torch's current stream, so that torch sees finished results."""
        if self.device.type != "cuda":
            return self._wp.ScopedDevice(self._wp_device)
        return self._wp.ScopedStream(self._wp.stream_from_torch(torch.cuda.current_stream(self.device)))

    def load(self, source: CpuSim, ids: np.ndarray) -> None:
        """Copies the states of `ids` from `source` (fresh episodes), then recomputes every world's forward."""
        index = torch.as_tensor(ids, device=self.device)
        for name in ("qpos", "qvel", "ctrl", "act", "time"):
            if name == "act" and self.model.na == 0:
                continue
            target = self.tensor(name)
            target[index] = torch.from_numpy(source.array(name)[ids]).to(self.device, target.dtype)
        with self._scope():
            self._mjw.forward(self._m, self._d)


def make_sim(
    model: mujoco.MjModel, num_envs: int, backend: str, device: torch.device, num_threads: int
) -> tuple[Any, CpuSim]:
    """The stepping backend and the CPU sim that initialises its episodes (the same object on CPU)."""
    if backend == "cpu":
        sim = CpuSim(model, num_envs, num_threads)
        return sim, sim
    if backend == "warp":
        return WarpSim(model, num_envs, device), CpuSim(model, num_envs, num_threads)
    raise ValueError(f"backend must be 'auto', 'cpu' or 'warp', got {backend!r}")
