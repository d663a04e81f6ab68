"""Batched envs: parity with dm_control, autoreset, statistics, determinism, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ssrl.envs import make
from ssrl.envs.batched import list_batched_tasks, make_batched
from ssrl.envs.batched.rewards import tolerance

PARITY_TASKS = [env_id.removeprefix("dmc/") for env_id in list_batched_tasks()]  # every batched task


def copy_state_into(env: object, batched: object, index: int) -> np.ndarray:
    """Puts env `index` of `batched` into the dm_control env under `env`; returns dm_control's observation."""
    dmc = env.unwrapped  # type: ignore[attr-defined]
    physics = dmc.physics
    sim = batched.init_sim  # type: ignore[attr-defined]
    with physics.reset_context():
        physics.data.qpos[:] = sim.array("qpos")[index]
        physics.data.qvel[:] = sim.array("qvel")[index]
        if physics.model.na:
            physics.data.act[:] = sim.array("act")[index]
        if hasattr(batched.task, "target"):  # type: ignore[attr-defined]
            physics.named.model.geom_pos["target", :2] = np.asarray(batched.task.target[index])  # type: ignore
    return dmc._state(dmc._env.task.get_observation(physics))


@pytest.mark.parametrize("task", PARITY_TASKS)
def test_parity_with_dm_control(task: str) -> None:
    env_id = f"dmc/{task}"
    batched = make_batched(env_id, 3, seed=1, action_repeat=2, num_threads=1)
    obs, _ = batched.reset(seed=1)
    single = make(env_id, obs="state", action_repeat=2, seed=0)
    single.reset(seed=0)
    first = copy_state_into(single, batched, 1)
    np.testing.assert_allclose(obs[1].numpy(), first, rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(40):
        action = rng.uniform(-1, 1, batched.action_space.shape).astype(np.float32)
        obs, reward, *_ = batched.step(torch.from_numpy(action))
        expected_obs, expected_reward, *_ = single.step(action[1])
        np.testing.assert_allclose(obs[1].numpy(), expected_obs, rtol=1e-5, atol=1e-5)
        assert reward[1].item() == pytest.approx(expected_reward, rel=1e-5, abs=1e-5)
    single.close()


def test_tolerance_matches_dm_control() -> None:
    from dm_control.utils import rewards

    x = np.linspace(-3, 3, 101)
    for sigmoid in ["gaussian", "hyperbolic", "long_tail", "reciprocal", "cosine", "linear", "quadratic",
                    "tanh_squared"]:  # fmt: skip
        for value_at_margin in [0.0, 0.1, 0.7]:
            if value_at_margin == 0 and sigmoid not in ("cosine", "linear", "quadratic"):
                continue
            for bounds in [(-0.5, 1.0), (-0.5, np.inf), (-np.inf, 1.0)]:
                expected = rewards.tolerance(x, bounds, 1.5, sigmoid, value_at_margin)
                got = tolerance(torch.from_numpy(x), bounds, 1.5, sigmoid, value_at_margin).numpy()
                np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=f"{sigmoid} {bounds}")
                got = tolerance(x, bounds, 1.5, sigmoid, value_at_margin)  # numpy in, numpy out
                assert isinstance(got, np.ndarray)
                np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=f"{sigmoid} {bounds} numpy")
    np.testing.assert_array_equal(tolerance(torch.from_numpy(x), (0, 1)).numpy(), rewards.tolerance(x, (0, 1)))
    np.testing.assert_array_equal(tolerance(x, (0, 1)), rewards.tolerance(x, (0, 1)))


def test_spaces_dtypes_and_conventions() -> None:
    env = make_batched("dmc/cheetah-run", 4, seed=0, num_threads=1)
    obs, info = env.reset(seed=0)
    assert env.single_observation_space.shape == (17,) and env.single_action_space.shape == (6,)
    assert env.observation_space.shape == (4, 17) and env.action_space.shape == (4, 6)
    assert obs.dtype == torch.float32 and obs.shape == (4, 17) and info == {}
    obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 6))
    assert reward.shape == (4,) and terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert not (terminated | truncated).any() and "episode" not in info
    assert len(set(obs[:, 0].tolist())) == 4  # envs start from different random states


def test_autoreset_same_step_and_episode_statistics() -> None:
    env = make_batched("dmc/cartpole-balance", 2, seed=0, action_repeat=8, num_threads=1)
    env.reset(seed=0)
    total = torch.zeros(2)
    for t in range(125):  # 1000 control steps / 8
        obs, reward, terminated, truncated, info = env.step(torch.zeros(2, 1))
        total += reward
        if t < 124:
            assert not truncated.any()
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all() and info["_episode"].all()
    torch.testing.assert_close(info["episode"]["r"], total)
    assert info["episode"]["l"].tolist() == [125, 125]
    # The returned observation starts a new episode: a balance reset has the pole near upright, cart near 0.
    assert not torch.equal(obs, info["final_obs"])
    assert obs[:, 0].abs().max() <= 0.1 and (obs[:, 1] > 0.99).all()
    _, _, _, truncated, info = env.step(torch.zeros(2, 1))
    assert not truncated.any() and "episode" not in info


def test_truncation_when_action_repeat_does_not_divide_the_time_limit() -> None:
    """ceil(1000 / 3) agent steps, the last one a single control step; the final obs is the 1000th's."""
    every = make_batched("dmc/cartpole-balance", 2, seed=0, action_repeat=1, num_threads=1)
    thirds = make_batched("dmc/cartpole-balance", 2, seed=0, action_repeat=3, num_threads=1)
    every.reset(seed=0)
    thirds.reset(seed=0)
    action = torch.full((2, 1), 0.3)
    for _ in range(1000):
        *_, info_every = every.step(action)
    for step in range(1, 335):
        *_, truncated, info_thirds = thirds.step(action)
        assert bool(truncated.all()) == (step == 334)
    torch.testing.assert_close(info_thirds["final_obs"], info_every["final_obs"], rtol=0, atol=0)
    torch.testing.assert_close(info_thirds["episode"]["r"], info_every["episode"]["r"], rtol=1e-5, atol=1e-4)
    assert info_thirds["episode"]["l"].tolist() == [334, 334]


def test_seed_determinism() -> None:
    def rollout(seed: int) -> torch.Tensor:
        env = make_batched("dmc/walker-walk", 3, seed=seed, num_threads=1)
        observations = [env.reset(seed=seed)[0]]
        generator = torch.Generator().manual_seed(0)
        for _ in range(10):
            observations.append(env.step(torch.rand(3, 6, generator=generator) * 2 - 1)[0])
        return torch.stack(observations)

    torch.testing.assert_close(rollout(3), rollout(3), rtol=0, atol=0)
    assert not torch.equal(rollout(3), rollout(4))


@pytest.mark.parametrize("task", ["cheetah-run", "cartpole-swingup", "hopper-hop", "quadruped-run", "humanoid-walk"])
def test_initial_state_distribution_matches_dm_control(task: str) -> None:
    from dm_control import suite

    domain, name = task.split("-")
    env = suite.load(domain, name, task_kwargs={"random": 0})
    expected = []
    for _ in range(48):
        env.reset()
        expected.append(env.physics.data.qpos.copy())
    reference = np.array(expected)
    batched = make_batched(f"dmc/{task}", 48, seed=0, num_threads=1)
    batched.reset(seed=0)
    got = batched.init_sim.array("qpos")
    assert (batched.init_sim.array("time") == 0).all()
    spread = reference.std(axis=0)
    np.testing.assert_allclose(got.mean(axis=0), reference.mean(axis=0), atol=0.01 + 0.5 * spread.max())
    varied = spread > 1e-3
    assert ((got.std(axis=0) > 1e-3) == varied).all()
    ratio = got.std(axis=0)[varied] / spread[varied]
    assert ((ratio > 0.5) & (ratio < 2)).all(), ratio


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="Unknown batched env id"):
        make_batched("dmc/cheetah-walk", 2)
    with pytest.raises(ValueError, match="num_envs"):
        make_batched("dmc/cheetah-run", 0)
    with pytest.raises(ValueError, match="backend"):
        make_batched("dmc/cheetah-run", 2, backend="jax")
    env = make_batched("dmc/cheetah-run", 2, num_threads=1)
    with pytest.raises(ValueError, match=r"actions: expected shape \(2, 6\)"):
        env.step(torch.zeros(2, 5))
    assert "dmc/cheetah-run" in list_batched_tasks()


def test_make_batched_is_reachable_from_ssrl_envs() -> None:
    import ssrl.envs

    assert ssrl.envs.make_batched is make_batched


def _pair(task: str, envs: int, repeat: int, path: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """The same env twice: its repeats recorded by `CpuSim.repeat` (`path` "rollout": one `Batch.rollout`;
    "chunked": 1 env a chunk) and stepped repeat by repeat."""
    import ssrl.envs.batched.backends as backends

    with monkeypatch.context() as patch:
        if path == "chunked":
            patch.setattr(backends.CpuSim, "rolls_out", lambda self, names: False)
        patch.setattr(backends, "REPEAT_CACHE_BYTES", 1)  # 1 env a chunk
        recorded = make_batched(task, envs, seed=0, action_repeat=repeat, num_threads=1)
    with monkeypatch.context() as patch:
        patch.setattr(backends.CpuSim, "rolls_out", lambda self, names: False)
        patch.setattr(backends, "REPEAT_CACHE_BYTES", 1 << 40)
        plain = make_batched(task, envs, seed=0, action_repeat=repeat, num_threads=1)
    if path == "chunked":
        recorded.sim.rolls_out = lambda names: False
    assert recorded._records is not None and plain._records is None
    assert recorded.sim.rolls_out(recorded._records) == (path == "rollout")
    return recorded, plain


@pytest.mark.parametrize(("task", "repeat", "steps", "path"), [
    ("dmc/cartpole-swingup", 8, 130, "chunked"), ("dmc/reacher-easy", 4, 20, "chunked"),
    ("dmc/cheetah-run", 4, 10, "chunked"), ("dmc/walker-walk", 2, 10, "chunked"),
    ("dmc/reacher-easy", 4, 20, "rollout"), ("dmc/cheetah-run", 4, 10, "rollout"), ("dmc/finger-spin", 2, 20, "rollout"),
    ("dmc/walker-walk", 2, 10, "rollout"), ("dmc/hopper-hop", 4, 10, "rollout"), ("dmc/quadruped-run", 4, 5, "rollout"),
    ("dmc/humanoid-walk", 4, 5, "rollout")])  # fmt: skip
def test_recorded_repeats_equal_repeat_by_repeat(task: str, repeat: int, steps: int, path: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Bit-identical observations, rewards, ends and episode statistics, across a time limit (cartpole); the
    rollout path on tasks whose rewards read state fields, positions and velocity sensors from a sensordata that
    (finger, hopper, quadruped, humanoid) also holds acceleration-stage sensors (their records are checked by
    `test_rollout_records_equal_fields_read_after_each_repeat`)."""
    recorded, plain = _pair(task, 5, repeat, path, monkeypatch)
    torch.testing.assert_close(recorded.reset(seed=0)[0], plain.reset(seed=0)[0], rtol=0, atol=0)
    generator = torch.Generator().manual_seed(0)
    ends = 0
    for _ in range(steps):
        action = torch.rand(5, recorded.single_action_space.shape[0], generator=generator) * 2 - 1
        got, expected = recorded.step(action), plain.step(action)
        for a, b in zip(got[:4], expected[:4], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert got[4].keys() == expected[4].keys()
        if "episode" in got[4]:
            ends += 1
            torch.testing.assert_close(got[4]["final_obs"], expected[4]["final_obs"], rtol=0, atol=0)
            torch.testing.assert_close(got[4]["episode"]["r"], expected[4]["episode"]["r"], rtol=0, atol=0)
    assert ends == (1 if task == "dmc/cartpole-swingup" else 0)


def test_cartpole_rk4_is_never_rolled_out() -> None:
    """An RK4 step leaves the derived fields of its last stage, so cartpole's repeats go chunk by chunk."""
    env = make_batched("dmc/cartpole-swingup", 2, seed=0)
    assert not env.sim.rolls_out(["qpos", "xmat"])
    assert make_batched("dmc/cheetah-run", 2, seed=0).sim.rolls_out(["sensordata"])
    assert not make_batched("dmc/cheetah-run", 2, seed=0).sim.rolls_out(["sensordata", "cacc"])  # stage unknown


@pytest.mark.parametrize("path", ["rollout", "chunked"])
def test_a_failure_inside_recorded_repeats_restores_and_ends_that_episode(path: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """MuJoCo failing on env 3 at the second repeat: `CpuSim.repeat` restores every env and the env falls back
    to the repeat-by-repeat loop, so both envs end episode 3 with the first repeat's reward only."""
    import mujoco.batch

    recorded, plain = _pair("dmc/cheetah-run", 5, 4, path, monkeypatch)
    for env in (recorded, plain):
        env.reset(seed=0)
        sim, calls = env.sim, [0]
        step = sim.step

        def failing(nstep: int, ids: np.ndarray | None = None, step=step, calls=calls) -> np.ndarray:
            """The repeat-by-repeat loop: env 3 fails at its second repeat."""
            failed = step(nstep, ids)
            calls[0] += 1
            return np.array([3]) if calls[0] == 2 else failed

        sim.step = failing
    batch = recorded.sim.batch
    call = batch.rollout if path == "rollout" else batch.step

    name = "rollout" if path == "rollout" else "step"

    def raising(*args: Any, **kwargs: Any) -> Any:
        """What `mujoco.batch` raises when env 3 fails inside the call (after the others ran on), once."""
        call(*args, **kwargs)
        setattr(batch, name, call)
        raise mujoco.batch.SimulationError(np.array([3]), "injected")

    setattr(batch, name, raising)
    action = torch.full((5, 6), 0.4)
    got, expected = recorded.step(action), plain.step(action)
    assert got[2].tolist() == [False, False, False, True, False]
    for a, b in zip(got[:4], expected[:4], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(got[4]["episode"]["r"], expected[4]["episode"]["r"], rtol=0, atol=0)
    assert got[4]["episode"]["l"][3] == 1


@pytest.mark.parametrize("task", ["dmc/quadruped-run", "dmc/cheetah-run"])
def test_rollout_records_equal_fields_read_after_each_repeat(task: str) -> None:
    """`CpuSim.repeat`'s records (one rollout) vs the live fields read after each `step(nstep)` of a twin
    simulator: state (qpos, qvel), positions (xpos) and sensordata, whose acceleration-stage columns (quadruped's
    accelerometer and toe forces) describe the state before each repeat's last substep, as `step` leaves them."""
    import mujoco  # after ssrl, which picks MUJOCO_GL before mujoco reads it

    from ssrl.envs.batched.backends import CpuSim

    env = make_batched(task, 3, seed=0)
    model, nstep, repeats = env.sim.model, 2, 3
    sims = [CpuSim(model, 3, num_threads=1) for _ in range(2)]
    for sim in sims:
        sim.batch.state[:] = env.sim.batch.state
        sim.array("ctrl")[:] = np.linspace(-0.9, 0.9, model.nu)
        sim.batch.forward(None, stage=mujoco.mjtStage.mjSTAGE_VEL)
    names = ["qpos", "qvel", "xpos", "sensordata"]
    assert sims[0].rolls_out(names)
    records = {name: np.zeros((repeats, *sims[0].array(name).shape)) for name in names}
    assert sims[0].repeat(nstep, repeats, records)
    for r in range(repeats):
        assert not len(sims[1].step(nstep))
        for name in names:
            np.testing.assert_array_equal(records[name][r], sims[1].array(name), err_msg=f"{name}, repeat {r}")
    acc = np.repeat(model.sensor_needstage == mujoco.mjtStage.mjSTAGE_ACC, model.sensor_dim)
    assert (task == "dmc/cheetah-run") != bool(np.diff(records["sensordata"][..., acc], axis=0).any())


LIMITED_HINGE = """<mujoco><option timestep="0.01"/><worldbody><geom type="plane" size="1 1 .1"/>
  <body><joint name="hinge" type="hinge" axis="0 1 0" limited="true" range="-10 10"/>
    <geom type="capsule" fromto="0 0 .3 .3 0 .3" size=".05" mass="1"/></body>
  <body pos="0 0 .2"><freejoint/><geom type="box" size=".05 .05 .05" mass=".2"/></body></worldbody>
  <actuator><motor joint="hinge" gear="1"/></actuator>
  <sensor>{sensors}<framepos objtype="xbody" objname="world"/></sensor></mujoco>"""


@pytest.mark.parametrize("sensors", ['<jointlimitpos joint="hinge"/><jointlimitvel joint="hinge"/>', ""],
                         ids=["limit-sensors", "no-limit-sensors"])
def test_a_rollouts_last_forward_computes_constraints_only_where_a_sensor_reads_them(sensors: str) -> None:
    """The forward after a rollout skips collision and constraints (nothing recorded reads them) unless a sensor
    before the acceleration stage does: a joint-limit sensor on a hinge held past its limit, and a box that
    lands on the floor, read after each of two `repeat` calls vs a twin simulator stepped call by call (the
    second call shows the contacts and limits are back for the stepping)."""
    import mujoco  # after ssrl, which picks MUJOCO_GL before mujoco reads it

    from ssrl.envs.batched.backends import CpuSim

    model = mujoco.MjModel.from_xml_string(LIMITED_HINGE.format(sensors=sensors))
    sims = [CpuSim(model, 2, num_threads=1) for _ in range(2)]
    for sim in sims:
        sim.array("qpos")[:, 0] = [0.3, -0.2]  # radians, past the +-10 degree range
        sim.array("ctrl")[:] = 0.5
        sim.batch.forward(None, stage=mujoco.mjtStage.mjSTAGE_VEL)
    names = ["qpos", "qvel", "xpos", "sensordata"]
    assert sims[0].rolls_out(names)
    for call in range(2):
        records = {name: np.zeros((3, *sims[0].array(name).shape)) for name in names}
        assert sims[0].repeat(5, 3, records)
        for r in range(3):
            assert not len(sims[1].step(5))
            for name in names:
                np.testing.assert_array_equal(records[name][r], sims[1].array(name), err_msg=f"{name}, {call} {r}")
    assert (sims[1].array("ncon") > 0).all()  # the box is on the floor
    if sensors:  # the last repeat's limit sensors (from the forward) are active in both envs
        assert (records["sensordata"][-1, :, :2] != 0).all()


def test_every_task_reads_only_fields_a_rollout_and_its_lean_forward_keep() -> None:
    """What lets `CpuSim.repeat` take the rollout path and its last forward skip collision and constraints:
    every batched task's observation and reward read state and position/velocity-stage fields only (a task
    reading contacts or constraint forces must change that path first)."""
    from ssrl.envs.batched.backends import _ROLLOUT_FIELDS
    from ssrl.envs.batched.env import _FieldTracer

    for task in list_batched_tasks():
        env = make_batched(task, 2)
        tracer = _FieldTracer(env.sim)
        env.task.observe(tracer)
        env.task.reward(tracer)
        assert tracer.names and set(tracer.names) <= _ROLLOUT_FIELDS, (task, set(tracer.names) - _ROLLOUT_FIELDS)
