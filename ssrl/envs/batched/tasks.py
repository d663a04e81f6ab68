"""dm_control suite tasks with observations and rewards computed in batch, on the simulator's own arrays.

Each task mirrors its dm_control definition (`dm_control/suite/<domain>.py`): the same MJCF model,
the same observation entries in the same order (flattened as `ssrl.envs.make(..., obs="state")` does)
and the same reward, with `rewards.tolerance` from `ssrl.envs.batched.rewards`. Episode
initialisation mirrors `initialize_episode` in numpy on a `CpuSim`.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
import torch

from ssrl.envs.batched.backends import CpuSim
from ssrl.envs.batched.rewards import array_module, tolerance

INF = float("inf")


def randomize_limited_and_rotational_joints(
    model: mujoco.MjModel, qpos: np.ndarray, ids: np.ndarray, rng: np.random.Generator
) -> None:
    """dm_control's `randomizers.randomize_limited_and_rotational_joints` for the envs `ids` of `qpos`."""
    n = len(ids)
    joint_types = mujoco.mjtJoint
    hinge, slide, ball, free = (int(joint_types.mjJNT_HINGE), int(joint_types.mjJNT_SLIDE),
                                int(joint_types.mjJNT_BALL), int(joint_types.mjJNT_FREE))  # fmt: skip
    for joint in range(model.njnt):
        adr, kind = int(model.jnt_qposadr[joint]), int(model.jnt_type[joint])
        low, high = model.jnt_range[joint]
        if model.jnt_limited[joint]:
            if kind in (hinge, slide):
                qpos[ids, adr] = rng.uniform(low, high, n)
            elif kind == ball:
                axis = rng.standard_normal((n, 3))
                axis /= np.linalg.norm(axis, axis=1, keepdims=True)
                half = rng.random(n)[:, None] * high / 2
                qpos[ids, adr : adr + 4] = np.concatenate([np.cos(half), axis * np.sin(half)], axis=1)
        elif kind == hinge:
            qpos[ids, adr] = rng.uniform(-np.pi, np.pi, n)
        elif kind == ball:
            quat = rng.standard_normal((n, 4))
            qpos[ids, adr : adr + 4] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
        elif kind == free:
            quat = rng.random((n, 4))  # dm_control's (documented) choice: rand, not randn
            qpos[ids, adr + 3 : adr + 7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)


def randomize_without_contacts(
    sim: CpuSim, ids: np.ndarray, rng: np.random.Generator, max_attempts: int = 1000
) -> None:
    """Random joints (as above), then `after_reset`, again for the envs with a contact (finger, humanoid)."""
    pending = ids
    for _ in range(max_attempts):
        randomize_limited_and_rotational_joints(sim.model, sim.array("qpos"), pending, rng)
        failed = sim.after_reset(pending)
        pending = pending[(sim.array("ncon")[pending] > 0) | np.isin(pending, failed)]
        if len(pending) == 0:
            return
    raise RuntimeError(f"No collision-free state after {max_attempts} attempts for {len(pending)} envs")


class Task:
    """A dm_control task over `num_envs` envs; subclasses define observe, reward and initialize.

    `observe` and `reward` read the simulator's live arrays (`sim.array`: numpy on the cpu backend, torch
    on warp) with the operations numpy and torch share (`self.xp` is the module), and return that type: on
    the CPU, numpy's per-call cost is a few times lower than torch's for the small arrays of a step.
    """

    # Attributes holding per-env episode state ((num_envs, ...) arrays), saved with the env's state.
    episode_state: tuple[str, ...] = ()

    def __init__(self, sim: Any) -> None:
        self.model, self.num_envs, self.xp, self.device = sim.model, sim.num_envs, sim.xp, sim.device

    @staticmethod
    def mjcf(domain: str, **kwargs: Any) -> tuple[str | bytes, dict[str, bytes]]:
        """The task's MJCF and assets, as dm_control builds them."""
        from dm_control import suite

        return getattr(suite, domain).get_model_and_assets()

    @staticmethod
    def configure(model: mujoco.MjModel, **kwargs: Any) -> None:
        """Edits the model once, before simulators are built (episode-invariant model changes)."""

    def look(self) -> dict[str, torch.Tensor]:
        """Per-env values of model fields that this task changes per episode and that show in pixels.

        Maps `"model.<field>"` to a (num_envs, *field shape) tensor; renderers write row i into the
        model before drawing env i.
        """
        return {}

    def initialize(self, sim: CpuSim, ids: np.ndarray, rng: np.random.Generator) -> None:
        """Writes fresh episode states of `ids` into `sim` (already reset; `forward` follows)."""
        randomize_limited_and_rotational_joints(self.model, sim.array("qpos"), ids, rng)

    def observe(self, sim: Any) -> Any:
        """(num_envs, obs_dim) observations, dm_control's entries concatenated in order."""
        raise NotImplementedError

    def reward(self, sim: Any) -> Any:
        """(num_envs,) rewards of the current state."""
        raise NotImplementedError

    # Name lookups.
    def _qpos(self, joint: str) -> int:
        return int(self.model.joint(joint).qposadr[0])

    def _body(self, body: str) -> int:
        return int(self.model.body(body).id)

    def _sensor(self, *names: str) -> list[int]:
        """Column indices of the named sensors' data, concatenated."""
        columns: list[int] = []
        for name in names:
            sensor = self.model.sensor(name)
            columns += range(int(sensor.adr[0]), int(sensor.adr[0] + sensor.dim[0]))
        return columns


class Cartpole(Task):
    """cartpole-{balance,swingup}[_sparse]."""

    def __init__(self, sim: Any, *, swing_up: bool, sparse: bool) -> None:
        super().__init__(sim)
        self.swing_up, self.sparse = swing_up, sparse
        self.slider = self._qpos("slider")

    def initialize(self, sim: CpuSim, ids: np.ndarray, rng: np.random.Generator) -> None:
        qpos, qvel, nv, n = sim.array("qpos"), sim.array("qvel"), self.model.nv, len(ids)
        if self.swing_up:
            qpos[ids, self.slider] = 0.01 * rng.standard_normal(n)
            qpos[ids, self._qpos("hinge_1")] = np.pi + 0.01 * rng.standard_normal(n)
            qpos[ids, 2:] = 0.1 * rng.standard_normal((n, nv - 2))
        else:
            qpos[ids, self.slider] = rng.uniform(-0.1, 0.1, n)
            qpos[ids, 1:] = rng.uniform(-0.034, 0.034, (n, nv - 1))
        qvel[ids] = 0.01 * rng.standard_normal((n, nv))

    def observe(self, sim: Any) -> Any:
        poles = sim.array("xmat")[:, 2:][..., [8, 2]].reshape(self.num_envs, -1)  # zz, xz per pole
        return self.xp.concat([sim.array("qpos")[:, self.slider : self.slider + 1], poles, sim.array("qvel")], 1)

    def reward(self, sim: Any) -> Any:
        cart, cosine = sim.array("qpos")[:, self.slider], sim.array("xmat")[:, 2:, 8]
        if self.sparse:
            return tolerance(cart, (-0.25, 0.25)) * tolerance(cosine, (0.995, 1)).prod(1)
        upright = (cosine + 1) / 2
        centered = (1 + tolerance(cart, margin=2)) / 2
        control = tolerance(sim.array("ctrl")[:, 0], margin=1, value_at_margin=0, sigmoid="quadratic")
        small_control = (4 + control) / 5
        small_velocity = (1 + self.xp.amin(tolerance(sim.array("qvel")[:, 1:], margin=5), 1)) / 2
        return upright.mean(1) * small_control * small_velocity * centered


class Cheetah(Task):
    """cheetah-run."""

    def initialize(self, sim: CpuSim, ids: np.ndarray, rng: np.random.Generator) -> None:
        limited = self.model.jnt_limited == 1  # one dof per joint, as dm_control asserts
        low, high = self.model.jnt_range[limited].T
        qpos = sim.array("qpos")
        qpos[np.ix_(ids, np.flatnonzero(limited))] = rng.uniform(low, high, (len(ids), len(low)))
        sim.settle(ids, 200)  # "Stabilize the model before the actual simulation."
        sim.array("time")[ids] = 0

    def observe(self, sim: Any) -> Any:
        return self.xp.concat([sim.array("qpos")[:, 1:], sim.array("qvel")], 1)

    def __init__(self, sim: Any) -> None:
        super().__init__(sim)
        self.speed = self._sensor("torso_subtreelinvel")[0]

    def reward(self, sim: Any) -> Any:
        speed = sim.array("sensordata")[:, self.speed]
        return tolerance(speed, (10, INF), margin=10, value_at_margin=0, sigmoid="linear")


class Walker(Task):
    """walker-{stand,walk,run}."""

    def __init__(self, sim: Any, *, move_speed: float) -> None:
        super().__init__(sim)
        self.move_speed = move_speed
        self.torso = self._body("torso")
        self.speed = self._sensor("torso_subtreelinvel")[0]

    def observe(self, sim: Any) -> Any:
        orientations = sim.array("xmat")[:, 1:][..., [0, 2]].reshape(self.num_envs, -1)  # xx, xz per body
        height = sim.array("xpos")[:, self.torso, 2:3]
        return self.xp.concat([orientations, height, sim.array("qvel")], 1)

    def reward(self, sim: Any) -> Any:
        standing = tolerance(sim.array("xpos")[:, self.torso, 2], (1.2, INF), margin=0.6)
        upright = (1 + sim.array("xmat")[:, self.torso, 8]) / 2
        stand = (3 * standing + upright) / 4
        if self.move_speed == 0:
            return stand
        move = tolerance(sim.array("sensordata")[:, self.speed], (self.move_speed, INF),
                         margin=self.move_speed / 2, value_at_margin=0.5, sigmoid="linear")  # fmt: skip
        return stand * (5 * move + 1) / 6


class Reacher(Task):
    """reacher-{easy,hard}; the target (a world geom) lives in `self.target`, one per env."""

    episode_state = ("target",)

    def __init__(self, sim: Any, *, target_size: float) -> None:
        super().__init__(sim)
        model = self.model
        self.target_size = target_size
        self.finger = int(model.geom("finger").id)
        self.radii = target_size + float(model.geom("finger").size[0])
        self.target = self.xp.zeros_like(sim.array("qpos")[:, :2])  # (num_envs, 2)
        self._target_geom = int(model.geom("target").id)
        self._geom_pos = torch.as_tensor(model.geom_pos, device=self.device)

    @staticmethod
    def configure(model: mujoco.MjModel, **kwargs: Any) -> None:
        model.geom_size[model.geom("target").id, 0] = kwargs["target_size"]  # only drawn: contacts are off

    def initialize(self, sim: CpuSim, ids: np.ndarray, rng: np.random.Generator) -> None:
        super().initialize(sim, ids, rng)
        angle = rng.uniform(0, 2 * np.pi, len(ids))
        radius = rng.uniform(0.05, 0.20, len(ids))
        target = np.stack([radius * np.sin(angle), radius * np.cos(angle)], 1)
        if self.xp is np:
            self.target[ids] = target.astype(np.float32)  # float32 targets, as on the warp backend
        else:
            self.target[torch.as_tensor(ids, device=self.device)] = torch.as_tensor(target).to(self.target)

    def _to_target(self, sim: Any) -> Any:
        return self.target - sim.array("geom_xpos")[:, self.finger, :2]

    def observe(self, sim: Any) -> Any:
        return self.xp.concat([sim.array("qpos"), self._to_target(sim), sim.array("qvel")], 1)

    def look(self) -> dict[str, torch.Tensor]:
        geom_pos = self._geom_pos.repeat(self.num_envs, 1, 1)
        geom_pos[:, self._target_geom, :2] = torch.as_tensor(self.target).to(geom_pos)
        return {"model.geom_pos": geom_pos}

    def reward(self, sim: Any) -> Any:
        return tolerance(_norm(self._to_target(sim)), (0, self.radii))


class FingerSpin(Task):
    """finger-spin."""

    def __init__(self, sim: Any) -> None:
        super().__init__(sim)
        self.position = self._sensor("proximal", "distal")
        self.tip, self.spinner = self._sensor("tip"), self._sensor("spinner")
        self.velocity = self._sensor("proximal_velocity", "distal_velocity", "hinge_velocity")
        self.touch = self._sensor("touchtop", "touchbottom")
        self.hinge_velocity = self._sensor("hinge_velocity")[0]

    @staticmethod
    def configure(model: mujoco.MjModel, **kwargs: Any) -> None:
        model.dof_damping[model.joint("hinge").dofadr[0]] = 0.03
        model.site_rgba[[model.site("target").id, model.site("tip").id], 3] = 0  # hidden, as dm_control does

    def initialize(self, sim: CpuSim, ids: np.ndarray, rng: np.random.Generator) -> None:
        randomize_without_contacts(sim, ids, rng)

    def observe(self, sim: Any) -> Any:
        data = sim.array("sensordata")
        tip = data[:, [self.tip[0], self.tip[2]]] - data[:, [self.spinner[0], self.spinner[2]]]
        return self.xp.concat(
            [data[:, self.position], tip, data[:, self.velocity], self.xp.log1p(data[:, self.touch])], 1
        )

    def reward(self, sim: Any) -> Any:
        return (sim.array("sensordata")[:, self.hinge_velocity] <= -15.0) * 1.0


class Hopper(Task):
    """hopper-{stand,hop}."""

    def __init__(self, sim: Any, *, hopping: bool) -> None:
        super().__init__(sim)
        self.hopping = hopping
        self.torso, self.foot = self._body("torso"), self._body("foot")
        self.speed = self._sensor("torso_subtreelinvel")[0]
        self.touch = self._sensor("touch_toe", "touch_heel")

    def observe(self, sim: Any) -> Any:
        touch = self.xp.log1p(sim.array("sensordata")[:, self.touch])
        return self.xp.concat([sim.array("qpos")[:, 1:], sim.array("qvel"), touch], 1)

    def reward(self, sim: Any) -> Any:
        xipos = sim.array("xipos")
        standing = tolerance(xipos[:, self.torso, 2] - xipos[:, self.foot, 2], (0.6, 2))
        if self.hopping:
            hopping = tolerance(sim.array("sensordata")[:, self.speed], (2, INF), margin=1, value_at_margin=0.5,
                                sigmoid="linear")  # fmt: skip
            return standing * hopping
        control = tolerance(sim.array("ctrl"), margin=1, value_at_margin=0, sigmoid="quadratic").mean(1)
        return standing * (control + 4) / 5


def _in_frame(vectors: Any, frame: Any) -> Any:
    """dm_control's `vectors.dot(frame)`: (N, K, 3) world vectors in a body frame given as (N, 9) xmat."""
    return array_module(vectors).einsum("nki,nij->nkj", vectors, frame.reshape(-1, 3, 3))


def _norm(vectors: Any) -> Any:
    """Euclidean norms of the rows of (N, K) vectors."""
    return (vectors * vectors).sum(1) ** 0.5


class Quadruped(Task):
    """quadruped-{walk,run} (dm_control's `Move`)."""

    def __init__(self, sim: Any, *, speed: float) -> None:
        super().__init__(sim)
        model = self.model
        self.speed = speed
        self.torso, self.root = self._body("torso"), self._qpos("root")
        hinges = np.flatnonzero(model.jnt_type == int(mujoco.mjtJoint.mjJNT_HINGE))
        self.hinge_qpos, self.hinge_qvel = model.jnt_qposadr[hinges].tolist(), model.jnt_dofadr[hinges].tolist()
        kinds = mujoco.mjtSensor

        def columns(*types: Any) -> list[int]:
            sensors = np.flatnonzero(np.isin(model.sensor_type, [int(t) for t in types]))
            return self._sensor(*(model.sensor(int(i)).name for i in sensors))

        self.imu = columns(kinds.mjSENS_GYRO, kinds.mjSENS_ACCELEROMETER)
        self.force_torque = columns(kinds.mjSENS_FORCE, kinds.mjSENS_TORQUE)
        self.velocimeter = self._sensor("velocimeter")

    @staticmethod
    def mjcf(domain: str, **kwargs: Any) -> tuple[str | bytes, dict[str, bytes]]:
        from dm_control.suite import common, quadruped

        return quadruped.make_model(floor_size=20 * kwargs["speed"]), common.ASSETS  # 20 s time limit

    def initialize(self, sim: CpuSim, ids: np.ndarray, rng: np.random.Generator) -> None:
        """A random orientation, raised from the floor in 1 cm steps until nothing touches."""
        orientation = rng.standard_normal((len(ids), 4))
        orientation /= np.linalg.norm(orientation, axis=1, keepdims=True)
        height = np.zeros(len(ids))
        pending = np.arange(len(ids))  # positions in ids
        for _ in range(10000):
            envs = ids[pending]
            sim.reset(envs)
            qpos = sim.array("qpos")
            qpos[envs, self.root : self.root + 2] = 0.0
            qpos[envs, self.root + 2] = height[pending]
            qpos[envs, self.root + 3 : self.root + 7] = orientation[pending]
            failed = sim.after_reset(envs)
            height[pending] += 0.01
            pending = pending[(sim.array("ncon")[envs] > 0) | np.isin(envs, failed)]
            if len(pending) == 0:
                return
        raise RuntimeError("Failed to find a non-contacting configuration.")

    def observe(self, sim: Any) -> Any:
        data = sim.array("sensordata")
        act = sim.array("act")
        return self.xp.concat([
            sim.array("qpos")[:, self.hinge_qpos], sim.array("qvel")[:, self.hinge_qvel], act,
            data[:, self.velocimeter], sim.array("xmat")[:, self.torso, 8:9], data[:, self.imu],
            self.xp.asinh(data[:, self.force_torque]),
        ], 1)  # fmt: skip

    def reward(self, sim: Any) -> Any:
        upright = tolerance(sim.array("xmat")[:, self.torso, 8], (1.0, INF), sigmoid="linear", margin=2.0,
                            value_at_margin=0)  # fmt: skip
        forward = sim.array("sensordata")[:, self.velocimeter[0]]
        move = tolerance(forward, (self.speed, INF), margin=self.speed, value_at_margin=0.5, sigmoid="linear")
        return upright * move


class Humanoid(Task):
    """humanoid-{stand,walk,run} (features, not `pure_state`)."""

    def __init__(self, sim: Any, *, move_speed: float) -> None:
        super().__init__(sim)
        self.move_speed = move_speed
        self.torso, self.head = self._body("torso"), self._body("head")
        self.limbs = [self._body(f"{side}_{limb}") for side in ("left", "right") for limb in ("hand", "foot")]
        self.com_velocity = self._sensor("torso_subtreelinvel")

    def initialize(self, sim: CpuSim, ids: np.ndarray, rng: np.random.Generator) -> None:
        randomize_without_contacts(sim, ids, rng, max_attempts=100_000)  # dm_control: no limit

    def observe(self, sim: Any) -> Any:
        xpos, xmat = sim.array("xpos"), sim.array("xmat")
        extremities = _in_frame(xpos[:, self.limbs] - xpos[:, self.torso : self.torso + 1], xmat[:, self.torso])
        return self.xp.concat([
            sim.array("qpos")[:, 7:], xpos[:, self.head, 2:3], extremities.reshape(self.num_envs, -1),
            xmat[:, self.torso, 6:9], sim.array("sensordata")[:, self.com_velocity], sim.array("qvel"),
        ], 1)  # fmt: skip

    def reward(self, sim: Any) -> Any:
        xmat = sim.array("xmat")
        standing = tolerance(sim.array("xpos")[:, self.head, 2], (1.4, INF), margin=1.4 / 4)
        upright = tolerance(xmat[:, self.torso, 8], (0.9, INF), sigmoid="linear", margin=1.9, value_at_margin=0)
        control = tolerance(sim.array("ctrl"), margin=1, value_at_margin=0, sigmoid="quadratic").mean(1)
        small_control = (4 + control) / 5
        horizontal = sim.array("sensordata")[:, self.com_velocity[:2]]
        if self.move_speed == 0:
            return small_control * standing * upright * tolerance(horizontal, margin=2).mean(1)
        move = tolerance(_norm(horizontal), (self.move_speed, INF), margin=self.move_speed, value_at_margin=0,
                         sigmoid="linear")  # fmt: skip
        return small_control * standing * upright * (5 * move + 1) / 6


# "domain-task" -> (task class, keyword arguments). Every episode lasts 1000 control steps.
TASKS: dict[str, tuple[type[Task], dict[str, Any]]] = {
    "cartpole-balance": (Cartpole, {"swing_up": False, "sparse": False}),
    "cartpole-balance_sparse": (Cartpole, {"swing_up": False, "sparse": True}),
    "cartpole-swingup": (Cartpole, {"swing_up": True, "sparse": False}),
    "cartpole-swingup_sparse": (Cartpole, {"swing_up": True, "sparse": True}),
    "cheetah-run": (Cheetah, {}),
    "walker-stand": (Walker, {"move_speed": 0.0}),
    "walker-walk": (Walker, {"move_speed": 1.0}),
    "walker-run": (Walker, {"move_speed": 8.0}),
    "reacher-easy": (Reacher, {"target_size": 0.05}),
    "reacher-hard": (Reacher, {"target_size": 0.015}),
    "finger-spin": (FingerSpin, {}),
    "hopper-stand": (Hopper, {"hopping": False}),
    "hopper-hop": (Hopper, {"hopping": True}),
    "quadruped-walk": (Quadruped, {"speed": 0.5}),
    "quadruped-run": (Quadruped, {"speed": 5.0}),
    "humanoid-stand": (Humanoid, {"move_speed": 0.0}),
    "humanoid-walk": (Humanoid, {"move_speed": 1.0}),
    "humanoid-run": (Humanoid, {"move_speed": 10.0}),
}
EPISODE_CONTROL_STEPS = 1000
