"""Environments: Gymnasium API compliance, pixel layout, frame stacking, action repeat, seeding, errors."""

import os
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ssrl.envs
from ssrl.envs import gl

SIZE = 32


@pytest.fixture(autouse=True)
def _quiet_checker():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum).*")
        warnings.filterwarnings("ignore", message=".*precision lowered.*")
        yield


@pytest.mark.parametrize("env_id, obs", [
    ("dmc/cartpole-swingup", "pixels"),
    ("dmc/cheetah-run", "state"),
    ("dmc/ball_in_cup-catch", "pixels+state"),
    ("dmc/walker-walk", "pixels"),
    ("gym/Hopper-v5", "pixels"),
    ("gym/HalfCheetah-v5", "state"),
])
def test_env_checker(env_id, obs):
    env = ssrl.envs.make(env_id, obs=obs, size=SIZE)
    check_env(env, skip_render_check=True)
    env.close()


def test_pixel_layout_and_frame_stack():
    env = ssrl.envs.make("dmc/cheetah-run", obs="pixels", size=SIZE, frame_stack=3, seed=0, render_size=256)
    obs, info = env.reset()
    assert obs.shape == (9, SIZE, SIZE) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[:3], obs[3:6])  # reset fills the stack with the first frame
    np.testing.assert_array_equal(obs[:3], obs[6:])
    assert obs.std() > 0  # a real image, not a blank buffer
    frames = [obs[6:]]
    for _ in range(3):
        nxt, *_ = env.step(np.ones(6, np.float32))
        np.testing.assert_array_equal(nxt[3:6], frames[-1])  # oldest first: the stack shifts by one frame
        frames.append(nxt[6:])
    assert not np.array_equal(frames[0], frames[-1])  # the cheetah moved
    assert "physics_state" in info and info["physics_state"].dtype == np.float64
    assert env.render().shape == (256, 256, 3)  # video frames are larger than the agent's view
    env.close()


def test_pixels_plus_state_dict():
    env = ssrl.envs.make("dmc/reacher-easy", obs="pixels+state", size=SIZE, frame_stack=2, seed=0)
    obs, _ = env.reset()
    assert set(obs) == {"pixels", "state"}
    assert obs["pixels"].shape == (6, SIZE, SIZE) and obs["state"].dtype == np.float32
    state_env = ssrl.envs.make("dmc/reacher-easy", obs="state", seed=0)
    np.testing.assert_array_equal(obs["state"], state_env.reset()[0])


@pytest.mark.parametrize("env_id, repeat", [("dmc/cartpole-swingup", 8), ("dmc/finger-spin", 2), ("dmc/walker-walk", 2),
                                            ("dmc/cheetah-run", 4), ("dmc/reacher-easy", 4), ("gym/Hopper-v5", 1)])
def test_default_action_repeat(env_id, repeat):
    assert ssrl.envs.default_action_repeat(env_id) == repeat
    env = ssrl.envs.make(env_id, obs="state")
    assert env.get_wrapper_attr("action_repeat") == repeat


def test_action_repeat_sums_rewards_of_repeated_steps():
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 6)).astype(np.float32)
    once = ssrl.envs.make("dmc/cheetah-run", obs="state", action_repeat=1, seed=3)
    twice = ssrl.envs.make("dmc/cheetah-run", obs="state", action_repeat=2, seed=3)
    np.testing.assert_array_equal(once.reset()[0], twice.reset()[0])
    for action in actions:
        r1 = once.step(action)[1] + once.step(action)[1]
        _obs2, r2, *_ = twice.step(action)
        assert r2 == pytest.approx(r1, abs=1e-9)
    np.testing.assert_array_equal(once.step(actions[0])[0], twice.unwrapped.step(actions[0])[0])


def test_seeding_is_reproducible():
    def rollout(seed):
        env = ssrl.envs.make("dmc/cartpole-swingup", obs="pixels", size=SIZE, seed=seed)
        obs = [env.reset()[0]]
        obs += [env.step(np.array([0.5], np.float32))[0] for _ in range(3)]
        obs.append(env.reset(seed=seed + 1)[0])
        return np.stack(obs)

    np.testing.assert_array_equal(rollout(7), rollout(7))
    assert not np.array_equal(rollout(7), rollout(8))


def test_episode_ends_with_truncation_at_time_limit():
    env = ssrl.envs.make("dmc/cartpole-balance", obs="state", action_repeat=8, seed=0)
    env.reset()
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done, steps = terminated or truncated, steps + 1
    assert truncated and not terminated and steps == 1000 // 8  # 1000 control steps per dm_control episode


def test_render_looks_differ_and_fast_is_default():
    fast = ssrl.envs.make("dmc/cheetah-run", size=SIZE, seed=0).reset()[0]
    dmc = ssrl.envs.make("dmc/cheetah-run", size=SIZE, seed=0, render="dmc").reset()[0]
    assert fast.shape == dmc.shape and not np.array_equal(fast, dmc)


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_make_vec(vectorization):
    envs = ssrl.envs.make_vec("dmc/cartpole-balance", 2, vectorization=vectorization, obs="pixels", size=SIZE, seed=0)
    try:
        obs, _ = envs.reset()
        assert obs.shape == (2, 9, SIZE, SIZE) and obs.dtype == np.uint8
        assert not np.array_equal(obs[0], obs[1])  # sub-envs get different seeds
        obs, reward, _terminated, _truncated, _ = envs.step(np.zeros((2, 1), np.float32))
        assert reward.shape == (2,) and obs.shape == (2, 9, SIZE, SIZE)
    finally:
        envs.close()


@pytest.mark.parametrize("env_id, match", [
    ("dmc/cheetah-runn", "close matches: dmc/cheetah-run"),
    ("dmc/nothing", "Unknown env id 'dmc/nothing'"),
    ("cheetah", "Unknown env id"),
])
def test_unknown_env_id_lists_close_matches(env_id, match):
    with pytest.raises(ValueError, match=match):
        ssrl.envs.make(env_id)


@pytest.mark.parametrize("options, match", [
    ({"obs": "rgb"}, "obs must be one of"),
    ({"render": "pretty"}, "render must be one of"),
    ({"size": 0}, "size must be an integer >= 1"),
    ({"action_repeat": 1.5}, "action_repeat must be an integer"),
    ({"camera": 9}, "camera: cartpole has 2 cameras"),
    ({"camera": "nope"}, "no camera named 'nope'"),
])
def test_bad_options_name_the_problem(options, match):
    with pytest.raises(ValueError, match=match):
        ssrl.envs.make("dmc/cartpole-swingup", **options)


def test_gl_backend_selection_and_error_message(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert gl.configure() == "osmesa"  # a user's choice is respected
    monkeypatch.delenv("MUJOCO_GL")
    assert gl.configure() in ("egl", "osmesa")  # found one of the headless libraries on this machine
    assert os.environ["MUJOCO_GL"] in ("egl", "osmesa")
    with pytest.raises(RuntimeError, match="apt-get install -y libosmesa6"):
        with gl.context_errors():
            raise OSError("no display")


@pytest.mark.parametrize("env_id", ["gym/Ant-v5", "gym/InvertedPendulum-v5", "gym/Pusher-v5"])
def test_gym_pixels_depend_only_on_the_seed_not_on_the_first_episode(env_id):
    """Gymnasium aims a free camera at the median geom position of the first render; ssrl fixes it."""
    frames = []
    for first in (1, 5):
        env = ssrl.envs.make(env_id, obs="pixels", size=32, frame_stack=1)
        env.reset(seed=first)
        frames.append(env.reset(seed=5)[0])
        env.close()
    np.testing.assert_array_equal(frames[0], frames[1])


def test_cheetah_logs_no_settotalmass_deprecation_but_other_absl_warnings_pass(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        ssrl.envs.make("dmc/cheetah-run", obs="state").close()
        logging.getLogger("absl").warning("an unrelated warning")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("settotalmass" in m for m in messages)
    assert "an unrelated warning" in messages
