"""Reward-free datasets: a directory of replay episode files plus ``dataset.json``.

The episodes are exactly the files :class:`~ssrl.data.ReplayBuffer` writes (``<index:06d>_<length>.npz``), so a
training run's ``replay/`` directory is a dataset once a ``dataset.json`` describes its spaces. Loading rebuilds a
ReplayBuffer from the files, which checks every array's shape and dtype and names the file that is wrong.

``collect`` stores a Dict observation: ``pixels`` (newest frames, uint8), ``state`` (the task's state vector) and
``physics_state`` (the simulator state, for probes), whatever policy acts; rewards are kept but never needed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ssrl import __version__
from ssrl.data.replay import _EPISODE_FILE, ReplayBuffer
from ssrl.errors import DatasetError

META = "dataset.json"
FORMAT = "ssrl-dataset"
POLICIES = ("random", "scripted", "checkpoint:RUN_DIR")
# Most steps held in memory while collecting (an episode must fit).
COLLECT_CAPACITY = 5_000


# ------------------------------------------------------------------------------------------------ spaces
def space_to_json(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Dict):
        return {"type": "dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, gym.spaces.Box):
        low, high = (float(np.min(space.low)), float(np.max(space.high)))
        return {"type": "box", "shape": list(space.shape), "dtype": str(space.dtype), "low": low, "high": high}
    raise DatasetError(f"cannot store observation space {space}")


def space_from_json(data: dict[str, Any]) -> gym.Space:
    if data["type"] == "dict":
        return gym.spaces.Dict({k: space_from_json(s) for k, s in data["spaces"].items()})
    return gym.spaces.Box(data["low"], data["high"], tuple(data["shape"]), np.dtype(data["dtype"]))


# ------------------------------------------------------------------------------------------------ reading
def read_meta(path: str | Path) -> dict[str, Any]:
    """The dataset card of directory ``path``, checked for the keys loading needs."""
    meta_path = Path(path) / META
    if not meta_path.exists():
        raise DatasetError(f"{meta_path} not found: is {path} an ssrl dataset? (ssrl collect / ssrl data export)")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        for key in ("observation_space", "action_space", "frame_stack", "action_repeat", "tasks"):
            if key not in meta:
                raise ValueError(f"missing key {key!r}")
        space_from_json(meta["observation_space"]), space_from_json(meta["action_space"])
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{meta_path} is not a valid dataset card: {e}") from None
    return meta


def episode_files(path: str | Path) -> list[tuple[Path, int]]:
    """``(file, transitions)`` of every episode file in ``path``, in index order."""
    found = sorted((int(m[1]), p, int(m[2])) for p in Path(path).iterdir() if (m := _EPISODE_FILE.fullmatch(p.name)))
    return [(p, length) for _, p, length in found]


def info(path: str | Path) -> dict[str, Any]:
    """Episodes, steps, env frames, tasks and bytes of a dataset (from its card and file names; no arrays read)."""
    meta = read_meta(path)
    files = episode_files(path)
    transitions = sum(length for _, length in files)
    return {
        "path": str(path),
        "tasks": meta["tasks"],
        "policy": meta.get("policy", "?"),
        "episodes": len(files),
        "steps": transitions + len(files),
        "transitions": transitions,
        "frames": transitions * meta["action_repeat"],
        "bytes": sum(p.stat().st_size for p, _ in files) + (Path(path) / META).stat().st_size,
        "observation": {k: f"{v['dtype']}{v['shape']}" for k, v in _flat_spaces(meta["observation_space"]).items()},
        "frame_stack": meta["frame_stack"],
    }


def pixel_key(meta: dict[str, Any]) -> str | None:
    """The observation entry holding images: ``"pixels"`` for Dict datasets, None when the whole obs is images."""
    spaces = meta["observation_space"]
    if spaces["type"] == "dict":
        if "pixels" not in spaces["spaces"]:
            raise DatasetError(f"dataset has no 'pixels' entry (it has {', '.join(spaces['spaces'])})")
        return "pixels"
    if len(spaces["shape"]) != 3 or spaces["dtype"] != "uint8":
        raise DatasetError(f"dataset observations are {spaces['dtype']}{spaces['shape']}, not uint8 images")
    return None


def _flat_spaces(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return data["spaces"] if data["type"] == "dict" else {"obs": data}


class Dataset:
    """A loaded dataset: a :class:`ReplayBuffer` over all its episodes, sampled like replay.

    ``key`` picks one entry of a Dict observation (e.g. ``"pixels"``): batches then hold that array instead of a
    dict, and ``observation_space`` is that entry's space.
    """

    def __init__(self, path: str | Path, key: str | None = None, *, n_step: int = 1, gamma: float = 0.99,
                 seed: int | None = None) -> None:
        self.path = Path(path)
        self.meta = read_meta(self.path)
        space = space_from_json(self.meta["observation_space"])
        self.key = key
        if key is not None:
            if not isinstance(space, gym.spaces.Dict) or key not in space.spaces:
                keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else ["(a single array)"]
                raise DatasetError(f"dataset {path} has no observation entry {key!r}; it has {', '.join(keys)}")
            space = gym.spaces.Dict({key: space.spaces[key]})
        files = episode_files(self.path)
        if not files:
            raise DatasetError(f"dataset {path} holds no episode files")
        steps = sum(length + 1 for _, length in files)
        self.action_space = space_from_json(self.meta["action_space"])
        self.replay = ReplayBuffer(space, self.action_space, max(steps, 2), frame_stack=self.meta["frame_stack"],
                                   n_step=n_step, gamma=gamma, directory=self.path, seed=seed)
        try:
            self.replay.restore()
        except ValueError as e:
            raise DatasetError(f"dataset {path}: {e}") from None
        self.observation_space = space[key] if key is not None else space

    def _unwrap(self, batch: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
        if self.key is not None:
            for name in names:
                batch[name] = batch[name][self.key]
        return batch

    def sample(self, batch_size: int, n_step: int | None = None) -> dict[str, Any]:
        """Transitions as :meth:`ReplayBuffer.sample` returns them."""
        return self._unwrap(self.replay.sample(batch_size, n_step), ("obs", "next_obs"))

    def sample_sequences(self, batch_size: int, length: int) -> dict[str, Any]:
        """Sequences as :meth:`ReplayBuffer.sample_sequences` returns them."""
        return self._unwrap(self.replay.sample_sequences(batch_size, length), ("obs",))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.replay.state_dict()["rng"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.replay._rng.bit_generator.state = state["rng"]

    def __len__(self) -> int:
        return len(self.replay)


# ------------------------------------------------------------------------------------------------ writing
def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    (out / META).write_text(json.dumps({"format": FORMAT, "ssrl_version": __version__, **meta}, indent=2))


def _check_empty(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty; choose a new out= directory")


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
        return {**obs, "physics_state": np.asarray(info["physics_state"], np.float64)}, reward, terminated, truncated, info


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
        from ssrl.experiments.train import load_run

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
    _check_empty(out)
    repeat = int(env.get_wrapper_attr("action_repeat"))
    frame_stack = int(env.get_wrapper_attr("frame_stack"))
    replay = ReplayBuffer(env.observation_space, env.action_space, COLLECT_CAPACITY, frame_stack=frame_stack,
                          directory=out, seed=seed)
    done_frames, episode, successes = 0, 0, 0
    total = episodes or frames
    with Progress(disable=not progress) as bar:
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
    _write_meta(out, {**meta, "seed": seed, "frame_stack": frame_stack, "action_repeat": repeat,
                      "success_rate": successes / episode, "observation_space": space_to_json(env.observation_space),
                      "action_space": space_to_json(env.action_space)})
    return info(out)


def collect(env_id: str, policy: str, frames: int, out: str | Path, *, size: int = 84, frame_stack: int = 3,
            action_repeat: int = 0, render: str = "fast", seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run ``policy`` in ``env_id`` for whole episodes until ``frames`` env frames; write a dataset to ``out``.

    With ``policy=checkpoint:RUN_DIR`` the run's own env settings (size, frame stack, action repeat, look) are used.
    Returns :func:`info` of the new dataset.
    """
    from ssrl.envs import make

    _check_empty(Path(out))
    if policy.startswith("checkpoint:"):
        from ssrl import config as config_lib

        cfg = config_lib.load(Path(policy.split(":", 1)[1]) / "config.yaml")
        env_id, size, frame_stack, action_repeat, render = cfg.env, cfg.size, cfg.frame_stack, cfg.action_repeat, cfg.render
    env = WithPhysics(make(env_id, obs="pixels+state", size=size, frame_stack=frame_stack,
                            action_repeat=action_repeat or None, render=render))
    try:
        act = _policy(policy, env, np.random.default_rng(seed))
        meta = {"tasks": [env_id], "policy": policy, "obs": "pixels+state", "size": size, "render": render}
        return record(env, act, Path(out), frames=frames, seed=seed, meta=meta, progress=progress)
    finally:
        env.close()


def subset(path: str | Path, episodes: int, out: str | Path) -> Path:
    """A dataset at ``out`` of the first ``episodes`` episodes of ``path`` (hard links, else copies); reused if it
    already holds exactly those files."""
    path, out = Path(path), Path(out)
    files = episode_files(path)
    if len(files) < episodes:
        raise DatasetError(f"dataset {path} has {len(files)} episodes, fewer than the {episodes} asked for")
    wanted = [p.name for p, _ in files[:episodes]]
    if out.exists() and sorted(p.name for p, _ in episode_files(out)) == wanted and (out / META).exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in wanted:
        try:
            os.link(path / name, out / name)
        except OSError:
            shutil.copy2(path / name, out / name)
    shutil.copy2(path / META, out / META)
    return out


def export_run(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Copy a training run's replay episodes into a dataset at ``out`` (the run is left untouched)."""
    from ssrl import config as config_lib
    from ssrl.experiments.train import make_env

    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.yaml").exists() or not (run_dir / "replay").is_dir():
        raise DatasetError(f"{run_dir} is not an ssrl run directory (needs config.yaml and replay/)")
    _check_empty(out)
    cfg = config_lib.load(run_dir / "config.yaml")
    env = make_env(cfg)
    spaces = space_to_json(env.observation_space), space_to_json(env.action_space)
    repeat = int(env.get_wrapper_attr("action_repeat"))
    env.close()
    out.mkdir(parents=True, exist_ok=True)
    files = episode_files(run_dir / "replay")
    for path, _ in files:
        shutil.copy2(path, out / path.name)
    _write_meta(out, {"tasks": [cfg.env], "policy": f"run:{run_dir}", "seed": cfg.seed, "obs": cfg.obs,
                      "size": cfg.size, "frame_stack": cfg.frame_stack, "action_repeat": repeat, "render": cfg.render,
                      "observation_space": spaces[0], "action_space": spaces[1]})
    return info(out)
