"""The MuJoCo Warp backend (on warp's CPU device) against the MuJoCo C backend.

Skips without mujoco-warp (`pip install 'ssrl[gpu]'`). The first run compiles warp's CPU kernels
(30-80 s on 2 cores, cached under ~/.cache/warp); later runs take seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco_warp", reason="MuJoCo Warp is not installed (pip install 'ssrl[gpu]')")

from ssrl.envs.batched import make_batched


@pytest.mark.slow
@pytest.mark.parametrize("task", ["cheetah-run", "cartpole-swingup"])
def test_warp_on_cpu_matches_mujoco_c(task: str) -> None:
    warp = make_batched(f"dmc/{task}", 4, backend="warp", device="cpu", seed=0, num_threads=1)
    c = make_batched(f"dmc/{task}", 4, backend="cpu", seed=0, num_threads=1)
    assert warp.sim.tensor("qpos").dtype == torch.float32  # warp's own memory, seen through torch
    obs_warp, _ = warp.reset(seed=0)
    obs_c, _ = c.reset(seed=0)
    torch.testing.assert_close(obs_warp, obs_c, atol=1e-5, rtol=1e-5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        action = torch.rand(4, c.single_action_space.shape[0], generator=generator) * 2 - 1
        obs_warp, reward_warp, *_ = warp.step(action)
        obs_c, reward_c, *_ = c.step(action)
        torch.testing.assert_close(obs_warp, obs_c, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(reward_warp, reward_c, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_warp_on_cuda_matches_mujoco_c_with_tensors_on_the_gpu() -> None:
    env = make_batched("dmc/cheetah-run", 64, device="cuda", seed=0)
    c = make_batched("dmc/cheetah-run", 64, backend="cpu", seed=0)
    assert env.sim.device.type == "cuda"
    env.reset(seed=0)
    c.reset(seed=0)
    for _ in range(5):  # the first step captures a CUDA graph, later ones replay it
        obs, reward, _terminated, truncated, _ = env.step(torch.zeros(64, 6, device="cuda"))
        obs_c, reward_c, *_ = c.step(torch.zeros(64, 6))
    assert obs.device.type == reward.device.type == truncated.device.type == "cuda"
    torch.testing.assert_close(obs.cpu(), obs_c, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(reward.cpu(), reward_c, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_warp_loads_new_episodes_for_some_envs_like_the_c_backend() -> None:
    """Autoreset's path: env 1 starts a new episode while env 0 keeps running."""
    warp = make_batched("dmc/cheetah-run", 2, backend="warp", device="cpu", seed=0, num_threads=1)
    c = make_batched("dmc/cheetah-run", 2, backend="cpu", seed=0, num_threads=1)
    warp.reset(seed=0)
    c.reset(seed=0)
    action = torch.full((2, 6), 0.5)
    for _ in range(3):
        warp.step(action)
        c.step(action)
    for env in (warp, c):
        env._reset_ids(np.array([1]))
    c_obs = torch.from_numpy(c.task.observe(c.sim)).float()  # numpy on the cpu backend
    torch.testing.assert_close(warp.task.observe(warp.sim), c_obs, atol=1e-3, rtol=1e-3)
    for _ in range(3):
        obs_warp, *_ = warp.step(action)
        obs_c, *_ = c.step(action)
    torch.testing.assert_close(obs_warp, obs_c, atol=1e-3, rtol=1e-3)
