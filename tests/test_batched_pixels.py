"""Batched pixel observations: parity with `ssrl.envs.make(obs="pixels")`, frame stacks across autoresets,
render worker processes, options."""

from __future__ import annotations

import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_batched import copy_state_into

from ssrl.envs import make
from ssrl.envs.batched import list_batched_tasks, make_batched

SIZE = 40


def assert_same_image(got: torch.Tensor, expected: np.ndarray) -> None:
    """Equal up to a few anti-aliasing-edge pixels (different GL contexts may round an edge differently)."""
    assert got.shape == expected.shape and got.dtype == torch.uint8
    differ = (got.numpy().astype(int) - expected).__abs__() > 2
    assert differ.mean() < 0.005, f"{differ.mean():.2%} of values differ"


@pytest.mark.parametrize(("task", "action_repeat"), [("cartpole-swingup", 2), ("reacher-hard", 300)])
def test_parity_with_single_env_across_steps_and_a_truncation(task: str, action_repeat: int) -> None:
    """reacher-hard: a per-episode target of the task's own size; action repeat 300 ends the episode
    inside the 4th step (1000 control steps), so final_obs comes from the middle of a batched step."""
    env_id = f"dmc/{task}"
    batched = make_batched(env_id, 2, obs="pixels", size=SIZE, seed=3, action_repeat=action_repeat, num_threads=1)
    obs, _ = batched.reset(seed=3)
    assert obs.shape == (2, 9, SIZE, SIZE) and obs.dtype == torch.uint8
    assert batched.single_observation_space == gym.spaces.Box(0, 255, (9, SIZE, SIZE), np.uint8)
    assert batched.observation_space.shape == (2, 9, SIZE, SIZE)
    assert batched.single_observation_space.contains(obs[0].numpy())
    single = make(env_id, obs="pixels", size=SIZE, action_repeat=action_repeat, seed=0)
    single.reset(seed=0)
    copy_state_into(single, batched, 1)
    first = single.unwrapped.render_pixels().transpose(2, 0, 1)  # type: ignore[attr-defined]
    for k in range(3):
        assert_same_image(obs[1, 3 * k : 3 * k + 3], first)  # the first frame, repeated
    rng = np.random.default_rng(0)
    for step in range(4):
        action = rng.uniform(-1, 1, batched.action_space.shape).astype(np.float32)
        obs, _, _, truncated, info = batched.step(torch.from_numpy(action))
        expected, *_, single_truncated, _ = single.step(action[1])
        got = info["final_obs"][1] if single_truncated else obs[1]
        assert bool(truncated[1]) == single_truncated and bool(info.get("_final_obs", truncated)[1]) == single_truncated
        since_copy = 3 * min(step + 1, 3)  # the single env's stack holds frames from before the copy at first
        assert_same_image(got[-since_copy:], expected[-since_copy:])
    assert (action_repeat == 300) == bool(truncated[1])
    single.close()
    batched.close()


@pytest.mark.parametrize("env_id", list_batched_tasks())
def test_every_task_looks_like_the_single_env(env_id: str) -> None:
    """Cameras (quadruped's 2, tracking ones), finger's hidden sites, reacher's target: reset frame and a step."""
    batched = make_batched(env_id, 2, obs="pixels", size=24, frame_stack=1, seed=1, num_threads=1)
    obs, _ = batched.reset(seed=1)
    single = make(env_id, obs="pixels", size=24, frame_stack=1, seed=0)
    single.reset(seed=0)
    copy_state_into(single, batched, 1)
    assert_same_image(obs[1], single.unwrapped.render_pixels().transpose(2, 0, 1))  # type: ignore[attr-defined]
    action = np.random.default_rng(0).uniform(-1, 1, batched.action_space.shape).astype(np.float32)
    assert_same_image(batched.step(torch.from_numpy(action))[0][1], single.step(action[1])[0])
    single.close()
    batched.close()


def test_stacks_shift_and_restart_after_an_autoreset() -> None:
    env = make_batched("dmc/cheetah-run", 2, obs="pixels", size=32, frame_stack=3, action_repeat=250, seed=0,
                       num_threads=1)  # fmt: skip
    previous, _ = env.reset(seed=0)
    for step in range(4):  # 4 x 250 control steps: the episodes end in the 4th
        obs, _, _, truncated, info = env.step(torch.ones(2, 6))
        newest = info["final_obs"] if step == 3 else obs
        assert torch.equal(newest[:, :6], previous[:, 3:])  # frames move one slot towards the oldest
        assert not torch.equal(newest[:, 6:], previous[:, 6:])  # and a new frame comes in
        previous = obs
    assert truncated.all() and info["_final_obs"].all()
    assert torch.equal(obs[:, :3], obs[:, 3:6]) and torch.equal(obs[:, 3:6], obs[:, 6:])  # new first frame x3
    assert not torch.equal(obs[:, 6:], info["final_obs"][:, 6:])
    env.close()


def test_render_workers_give_the_in_process_images_and_fail_loudly() -> None:
    kwargs = {"obs": "pixels", "size": 32, "frame_stack": 2, "seed": 0, "num_threads": 1, "action_repeat": 2}
    local = make_batched("dmc/walker-walk", 3, **kwargs)
    pooled = make_batched("dmc/walker-walk", 3, render_workers=2, **kwargs)
    processes = [process for process, _ in pooled.pixels._workers]
    assert all(process.is_alive() for process in processes)
    torch.testing.assert_close(pooled.reset(seed=1)[0], local.reset(seed=1)[0], rtol=0, atol=0)
    for _ in range(2):
        actions = torch.rand(3, 6) * 2 - 1
        torch.testing.assert_close(pooled.step(actions)[0], local.step(actions)[0], rtol=0, atol=0)
    os.kill(processes[1].pid, signal.SIGKILL)
    processes[1].join(timeout=10)
    with pytest.raises(RuntimeError, match=r"render worker 1 .* exited with code -9"):
        pooled.step(torch.zeros(3, 6))
    assert not any(process.is_alive() for process in processes)  # the pool shut the other worker down
    pooled.close()
    local.close()


@pytest.mark.parametrize(
    ("options", "named"),
    [({"obs": "rgb"}, "obs"), ({"size": 0}, "size"), ({"size": 8.5}, "size"), ({"frame_stack": 0}, "frame_stack"),
     ({"render": "pretty"}, "render"), ({"render_workers": -1}, "render_workers"), ({"camera": "nope"}, "camera"),
     ({"camera": 7}, "camera"), ({"render": "warp"}, "render='warp' needs backend='warp'")],
)  # fmt: skip
def test_bad_options_name_the_problem(options: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        make_batched("dmc/cartpole-swingup", 2, backend="cpu", **{"obs": "pixels", **options})  # type: ignore[arg-type]


def test_state_observations_stay_the_default() -> None:
    env = make_batched("dmc/cartpole-swingup", 2, seed=0, num_threads=1)
    obs, _ = env.reset(seed=0)
    assert env.pixels is None and obs.shape == (2, 5) and obs.dtype == torch.float32
    assert env.single_observation_space.shape == (5,)


@pytest.mark.slow
def test_warp_backend_pixels_on_warps_cpu_device() -> None:
    """render="fast" on the warp backend copies qpos to the CPU renderers: the CPU backend's images.
    render="warp" ray traces on the warp device: same geometry, another lighting model (not pixel parity)."""
    pytest.importorskip("mujoco_warp", reason="MuJoCo Warp is not installed (pip install 'ssrl[gpu]')")
    kwargs = {"obs": "pixels", "size": 32, "frame_stack": 1, "seed": 0, "num_threads": 1, "action_repeat": 8}
    c = make_batched("dmc/cartpole-swingup", 2, backend="cpu", **kwargs)
    gl_on_warp = make_batched("dmc/cartpole-swingup", 2, backend="warp", device="cpu", **kwargs)
    ray = make_batched("dmc/cartpole-swingup", 2, backend="warp", device="cpu", render="warp", **kwargs)
    expected, got, traced = c.reset(seed=0)[0], gl_on_warp.reset(seed=0)[0], ray.reset(seed=0)[0]
    first_expected, first_traced = expected, traced
    for _ in range(3):
        actions = torch.ones(2, 1)
        expected, got, traced = c.step(actions)[0], gl_on_warp.step(actions)[0], ray.step(actions)[0]
        assert_same_image(got[0], expected[0].numpy())
        assert traced.shape == expected.shape and traced.dtype == torch.uint8
        assert (traced.float() - expected.float()).abs().mean() < 8  # measured 4.6 of 255
    moved_gl, moved_ray = (expected != first_expected).float().mean(), (traced != first_traced).float().mean()
    assert moved_gl > 0.01 and abs(moved_ray - moved_gl) < 0.005  # the cart moves by as much in both
    for env in (c, gl_on_warp, ray):
        env.close()


def test_mocap_bodies_are_drawn_where_each_env_puts_them() -> None:
    """No batched task has mocap bodies; a toy model checks that each env's mocap pose reaches its frame."""
    import mujoco

    from ssrl.envs.batched.backends import CpuSim
    from ssrl.envs.batched.render import GLPool, SceneRenderer, scene_fields
    from ssrl.envs.batched.tasks import Task

    model = mujoco.MjModel.from_xml_string("""<mujoco><worldbody><light pos="0 0 3"/><camera pos="0 0 2"/>
        <geom type="plane" size="1 1 .1"/><body mocap="true"><geom type="box" size=".1 .1 .1" rgba="1 0 0 1"/></body>
        </worldbody></mujoco>""")
    sim = CpuSim(model, 3, 1)
    positions = np.array([[-0.4, 0, 0.1], [0, 0, 0.1], [0.4, 0, 0.1]])
    sim.array("mocap_pos")[:] = positions.reshape(sim.array("mocap_pos").shape)
    sim.array("mocap_quat")[..., 0] = 1
    task = Task(sim)
    pool = GLPool(model, 3, 32, 0, "fast", scene_fields(sim, task))
    frames = pool.render(sim, task, np.arange(3))
    reference, data = SceneRenderer(model, 32, 0, "fast"), mujoco.MjData(model)
    for i, position in enumerate(positions):
        data.mocap_pos[0] = position
        mujoco.mj_forward(model, data)
        reference.renderer.update_scene(data, 0)
        np.testing.assert_array_equal(frames[i].permute(1, 2, 0).numpy(), reference.renderer.render())
    assert not torch.equal(frames[0], frames[2])
    pool.close()
    reference.close()
