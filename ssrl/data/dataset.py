"""Reward-free datasets: a directory of replay episode files plus ``dataset.json``.

The episodes are exactly the files :class:`~ssrl.data.ReplayBuffer` writes (``<index:06d>_<length>.npz``), so a
training run's ``replay/`` directory is a dataset once a ``dataset.json`` describes its spaces. Loading rebuilds a
ReplayBuffer from the files, which checks every array's shape and dtype and names the file that is wrong.

``collect`` stores a Dict observation: ``pixels`` (newest frames, uint8), ``state`` (the task's state vector) and
``physics_state`` (the simulator state, for probes), whatever policy acts; rewards are kept but never needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from ssrl import __version__
from ssrl.data import episodes
from ssrl.data.host_replay import ReplayBuffer
from ssrl.errors import DatasetError

META = "dataset.json"
FORMAT = "ssrl-dataset"


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
    return episodes.in_order(Path(path))


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


def episode_arrays(path: str | Path, frame_stack: int | None = None) -> dict[str, np.ndarray]:
    """Every step of a dataset's episodes, concatenated in episode order: each observation entry (``obs/<key>``;
    pixels stacked ``frame_stack`` deep, default the dataset's, as the replay stacks them: oldest first, the first
    frame repeated before the start), ``action`` (zeros after an episode's last observation), and ``episode``."""
    meta = read_meta(path)
    stack = frame_stack or meta["frame_stack"]
    parts: dict[str, list[np.ndarray]] = {}
    for episode, (file, length) in enumerate(episode_files(path)):
        with np.load(file) as z:
            arrays = {name: z[name] for name in z.files if name.startswith("obs")}
            action = z["action"]
        for name, value in arrays.items():
            if value.dtype == np.uint8 and value.ndim == 4:  # (T, C, H, W) newest frames
                index = np.maximum(np.arange(len(value))[:, None] + np.arange(1 - stack, 1), 0)
                value = value[index].reshape(len(value), -1, *value.shape[-2:])
            parts.setdefault(name, []).append(value)
        parts.setdefault("action", []).append(np.concatenate([action, np.zeros_like(action[:1])]))
        parts.setdefault("episode", []).append(np.full(length + 1, episode))
    return {name: np.concatenate(values) for name, values in parts.items()}


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
        self.key = key
        card = self.meta["observation_space"]
        space = space_from_json(card if key is None else select_entries(card, [key], path))
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
        return {"rng": self.replay.rng_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.replay.rng_state = state["rng"]

    def __len__(self) -> int:
        return len(self.replay)


# ------------------------------------------------------------------------------------------------ writing
def write_meta(out: Path, meta: dict[str, Any]) -> None:
    (out / META).write_text(json.dumps({"format": FORMAT, "ssrl_version": __version__, **meta}, indent=2))


def select_entries(space: dict[str, Any], keys: list[str], path: str | Path) -> dict[str, Any]:
    """A card's Dict observation space restricted to the entries ``keys``; a missing one is a ``DatasetError``."""
    have = space["spaces"] if space["type"] == "dict" else {}
    if missing := [k for k in keys if k not in have]:
        listed = ", ".join(have) or "(a single array)"
        raise DatasetError(f"dataset {path} has no observation entry {missing[0]!r}; it has {listed}")
    return {**space, "spaces": {k: have[k] for k in keys}}


def check_empty(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty; choose a new out= directory")


@contextlib.contextmanager
def writing(out: Path) -> Iterator[Path]:
    """A scratch directory to write the new dataset ``out`` into; it becomes ``out`` when the block ends without
    error, so an interrupted write never leaves a part of a dataset at ``out``. The scratch, ``.<name>.partial``
    beside ``out``, is kept after an error and emptied by the next write of ``out``; a second process writing the
    same ``out`` meanwhile is refused."""
    out = Path(out)
    check_empty(out)
    scratch = out.with_name(f".{out.name}.partial")
    scratch.mkdir(parents=True, exist_ok=True)
    lock = open(scratch / ".lock", "a")  # noqa: SIM115 (held while writing; closing releases the flock)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DatasetError(f"{out} is being written by another process (its scratch {scratch} is locked)") from None
        for stale in scratch.iterdir():  # what an interrupted write left
            if stale.name != ".lock":
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        yield scratch
        (scratch / ".lock").unlink()
        if out.exists():
            out.rmdir()  # empty (checked above)
        scratch.rename(out)
    finally:
        lock.close()


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link to an episode file (they are never modified), or a copy where the filesystem has none."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def merge(sources: list[str | Path], out: str | Path, keys: list[str] | None = None) -> dict[str, Any]:
    """One dataset at ``out`` holding every episode of ``sources`` (renumbered in order; hard links, else copies).
    The sources must agree on spaces, frame stack and action repeat; with ``keys``, only those observation
    entries of a Dict observation (e.g. ``pixels`` of MetaWorld tasks whose ``physics_state`` sizes differ) must
    agree, and the card lists only them. The card lists every task and policy."""
    out = Path(out)
    if len(sources) < 2:
        raise DatasetError("merge needs at least two datasets")
    metas = [read_meta(path) for path in sources]
    if keys:
        metas = [{**meta, "observation_space": select_entries(meta["observation_space"], keys, path)}
                 for meta, path in zip(metas, sources)]
    for key in ("observation_space", "action_space", "frame_stack", "action_repeat"):
        if any(meta[key] != metas[0][key] for meta in metas):
            raise DatasetError(f"cannot merge {', '.join(map(str, sources))}: their {key} differ"
                               + (_differing_entries(metas, keys) if key == "observation_space" else ""))
    with writing(out) as scratch:
        index = 0
        for path in sources:
            for file, length in episode_files(path):
                link_or_copy(file, scratch / episodes.file_name(index, length))
                index += 1
        tasks = list(dict.fromkeys(task for meta in metas for task in meta["tasks"]))
        write_meta(scratch, {**{k: v for k, v in metas[0].items() if k not in ("format", "ssrl_version")},
                             "tasks": tasks, "policy": " + ".join(str(meta.get("policy", "?")) for meta in metas),
                             "sources": [str(Path(path).resolve()) for path in sources]})
    return info(out)


def _differing_entries(metas: list[dict[str, Any]], keys: list[str] | None) -> str:
    """Which entries of Dict observations differ, and the keys= that merges the others."""
    spaces = [meta["observation_space"] for meta in metas]
    if keys or any(space["type"] != "dict" for space in spaces):
        return ""
    names = list(dict.fromkeys(k for space in spaces for k in space["spaces"]))
    shared = [k for k in names if all(space["spaces"].get(k) == spaces[0]["spaces"].get(k) for space in spaces)]
    differ = ", ".join(k for k in names if k not in shared)
    return f" (entries {differ}); keys={','.join(shared)} merges only the entries they share" if shared else ""


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
        link_or_copy(path / name, out / name)
    shutil.copy2(path / META, out / META)
    return out
