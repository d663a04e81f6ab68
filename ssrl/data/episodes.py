"""The on-disk episode format, once: ``<index:06d>_<length>.npz`` per finished episode, with ``obs`` (or
``obs/<key>`` for Dict observations; newest frames, ``length+1`` rows), ``action`` and ``reward`` (``length``
rows: the action taken at each observation and the reward after it) and ``terminated`` (a scalar bool).
A training run's ``replay/`` and a dataset (:mod:`ssrl.data.dataset`) are directories of these files."""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ssrl import files
from ssrl.errors import DatasetError

PATTERN = re.compile(r"(\d{6,})_(\d+)\.npz")
Layout = dict[str, tuple[tuple[int, ...], np.dtype]]


def file_name(index: int, length: int) -> str:
    return f"{index:06d}_{length}.npz"


def find(directory: Path) -> dict[int, tuple[Path, int]]:
    """``{index: (file, transitions)}`` of the episode files in ``directory``; two files of one index are a
    ``DatasetError``."""
    found: dict[int, tuple[Path, int]] = {}
    for path in Path(directory).iterdir():
        if match := PATTERN.fullmatch(path.name):
            index = int(match[1])
            if index in found:
                raise DatasetError(f"two files for episode {index}: {found[index][0]} and {path}")
            found[index] = path, int(match[2])
    return found


def in_order(directory: Path) -> list[tuple[Path, int]]:
    """``(file, transitions)`` of every episode file in ``directory``, in index order."""
    return [files for _, files in sorted(find(directory).items())]


def write(directory: Path, index: int, length: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one episode atomically (a kill mid-write leaves no partial episode file)."""
    with files.atomic_writer(Path(directory) / file_name(index, length)) as f:
        np.savez(f, **arrays)


def read(path: Path, layout: Layout) -> dict[str, np.ndarray]:
    """The arrays of an episode file, each checked against ``layout`` (name -> (shape, dtype)); a file that is
    unreadable or does not fit is a ``DatasetError`` naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {name: z[name] for name in layout if name in z.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise DatasetError(f"episode file {path} is unreadable: {err!r}") from err
    if missing := sorted(layout.keys() - data.keys()):
        raise DatasetError(f"episode file {path}: missing arrays {missing}")
    for name, (shape, dtype) in layout.items():
        if data[name].shape != shape or data[name].dtype != dtype:
            raise DatasetError(f"episode file {path}: {name!r} is {data[name].dtype}{list(data[name].shape)},"
                             f" expected {dtype}{list(shape)}")
    return data
