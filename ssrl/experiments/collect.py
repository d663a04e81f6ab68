"""Writing reward-free datasets from envs: ``ssrl collect`` (random, scripted or a trained run's policy) and
``ssrl data export`` (a training run's replay episodes). The format is :mod:`ssrl.data.dataset`'s."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ssrl.data import ReplayBuffer
from ssrl.data.dataset import check_empty, episode_files, info, space_to_json, write_meta, writing
from ssrl.errors import DatasetError

POLICIES = ("random", "scripted", "checkpoint:RUN_DIR")
# Most steps held in memory while collecting (an episode must fit).
COLLECT_CAPACITY = 5_000


class WithPhysics(gym.Wrapper):
    """Adds ``info["physics_state"]`` to a ``pixels+state`` Dict observation as ``physics_state``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        _, info = env.reset(seed=0)
        dim = np.asarray(info["physics_state"]).shape
        self.observation_space = gym.spaces.Dict(
            {**env.observation_space.spaces, "physics_state": gym.spaces.Box(-np.inf, np.inf, dim, np.float64)})

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return {**obs, "physics_state": np.asarray(info["physics_state"], np.float64)}, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs = {**obs, "physics_state": np.asarray(info["physics_state"], np.float64)}
        return obs, reward, terminated, truncated, info


def _policy(spec: str, env: gym.Env, rng: np.random.Generator) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """An ``obs -> action`` function for ``policy=random|scripted|checkpoint:RUN_DIR``."""
    space = env.action_space
    if spec == "random":
        return lambda obs: rng.uniform(space.low, space.high).astype(np.float32)
    if spec == "scripted":
        base = env.unwrapped
        if not hasattr(base, "expert_action"):
            raise DatasetError(f"policy=scripted: {type(base).__name__} has no scripted expert (MetaWorld tasks do)")
        return lambda obs: base.expert_action()
    if spec.startswith("checkpoint:"):
        from ssrl.experiments.offpolicy import load_run

        cfg, agent, run_env = load_run(Path(spec.split(":", 1)[1]))
        run_env.close()
        pick = {"pixels": lambda o: o["pixels"], "state": lambda o: o["state"],
                "pixels+state": lambda o: {"pixels": o["pixels"], "state": o["state"]}}[cfg.obs]
        return lambda obs: agent.act(pick(obs), 0, eval_mode=True)
    raise DatasetError(f"policy={spec!r}: choose one of {', '.join(POLICIES)}")


def record(env: gym.Env, act: Callable[[Any], np.ndarray], out: Path, *, frames: int = 0, episodes: int = 0,
           seed: int = 0, meta: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Run ``act`` in ``env`` for whole episodes until ``frames`` env frames or ``episodes`` episodes (whichever
    is given), writing replay episode files and ``dataset.json`` (``meta`` plus spaces) to ``out``."""
    from rich.progress import Progress

    out = Path(out)
    repeat = int(env.get_wrapper_attr("action_repeat"))
    frame_stack = int(env.get_wrapper_attr("frame_stack"))
    with writing(out) as scratch, Progress(disable=not progress) as bar:
        replay = ReplayBuffer(env.observation_space, env.action_space, COLLECT_CAPACITY, frame_stack=frame_stack,
                              directory=scratch, seed=seed)
        done_frames, episode, successes = 0, 0, 0
        total = episodes or frames
        task = bar.add_task(f"collect {meta['tasks'][0]} policy={meta['policy']}", total=total)
        while (episode < episodes) if episodes else (done_frames < frames):
            obs, _ = env.reset(seed=seed * 1_000_003 + episode)
            replay.add_first(obs)
            done, success = False, False
            while not done:
                action = act(obs)
                obs, reward, terminated, truncated, step_info = env.step(action)
                done = terminated or truncated
                replay.add(action, float(reward), obs, terminated, truncated)
                success |= bool(step_info.get("success", False))
                done_frames += repeat
            episode += 1
            successes += success
            bar.update(task, completed=episode if episodes else min(done_frames, frames))
        write_meta(scratch, {**meta, "seed": seed, "frame_stack": frame_stack, "action_repeat": repeat,
                             "success_rate": successes / episode,
                             "observation_space": space_to_json(env.observation_space),
                             "action_space": space_to_json(env.action_space)})
    return info(out)


def collect(env_id: str, policy: str, frames: int, out: str | Path, *, size: int = 84, frame_stack: int = 3,
            action_repeat: int = 0, render: str = "fast", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run ``policy`` in ``env_id`` for whole episodes until ``frames`` env frames; write a dataset to ``out``.

    With ``policy=checkpoint:RUN_DIR`` the run's own env settings (size, frame stack, action repeat, look) are used.
    Returns :func:`info` of the new dataset.
    """
    from ssrl.envs import make

    check_empty(Path(out))
    if policy.startswith("checkpoint:"):
        from ssrl import config as config_lib

        cfg = config_lib.load(Path(policy.split(":", 1)[1]) / "config.yaml")
        env_id, size, frame_stack = cfg.env, cfg.size, cfg.frame_stack
        action_repeat, render = cfg.action_repeat, cfg.render
    env = WithPhysics(make(env_id, obs="pixels+state", size=size, frame_stack=frame_stack,
                            action_repeat=action_repeat or None, render=render))
    try:
        act = _policy(policy, env, np.random.default_rng(seed))
        meta = {"tasks": [env_id], "policy": policy, "obs": "pixels+state", "size": size, "render": render}
        return record(env, act, Path(out), frames=frames, seed=seed, meta=meta, progress=progress)
    finally:
        env.close()


def export_run(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Copy a training run's replay episodes into a dataset at ``out`` (the run is left untouched)."""
    from ssrl import config as config_lib
    from ssrl.runtime.environments import make_env

    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.yaml").exists() or not (run_dir / "replay").is_dir():
        raise DatasetError(f"{run_dir} is not an ssrl run directory (needs config.yaml and replay/)")
    check_empty(out)
    cfg = config_lib.load(run_dir / "config.yaml")
    env = make_env(cfg)
    spaces = space_to_json(env.observation_space), space_to_json(env.action_space)
    repeat = int(env.get_wrapper_attr("action_repeat"))
    env.close()
    with writing(out) as scratch:
        for path, _ in episode_files(run_dir / "replay"):
            shutil.copy2(path, scratch / path.name)
        write_meta(scratch, {"tasks": [cfg.env], "policy": f"run:{run_dir}", "seed": cfg.seed, "obs": cfg.obs,
                             "size": cfg.size, "frame_stack": cfg.frame_stack, "action_repeat": repeat,
                             "render": cfg.render, "observation_space": spaces[0], "action_space": spaces[1]})
    return info(out)
