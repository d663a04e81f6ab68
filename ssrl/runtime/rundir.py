"""One process per run directory, and nothing in it lost.

:func:`check_path` refuses a path that cannot become a run directory before anything is created.
:func:`claim` then creates the directory and takes its lock: ``.lock`` holds the PID, host and start time of the
process that holds it, and a second process is refused at once with those named. The lock is a ``flock`` on that
file (Linux emulates it with POSIX locks on NFS), so a process that dies releases it and the next one takes over.
Holding it, :func:`claim` removes the temporary files killed writes left behind, refuses to start over a run whose
checkpoint is missing while its data (replay episodes, CSV rows) is there, and, only with ``restart=true``, moves
the old contents aside to ``<run_dir>.old-<time>`` (nothing is deleted).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from ssrl import files
from ssrl.errors import RunDirError
from ssrl.runtime.checkpoint import CHECKPOINT
from ssrl.runtime.progress import console

LOCK = ".lock"
LOGS = ("train.csv", "eval.csv", "pretrain.csv")


def check_path(path: Path, key: str = "run_dir") -> None:
    """Raise :class:`RunDirError` if ``path`` cannot be a run directory this process writes (it is a file, or
    its nearest existing ancestor is a file or not writable); creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{key}={path} is a file, not a directory; choose another {key}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"{key}={path}: {existing} is a file, so the directory cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"{key}={path}: no write permission in {existing}; choose another {key} "
                          "or change the permissions")


def has_data(run_dir: Path) -> list[str]:
    """What in ``run_dir`` a run wrote that a fresh start would redo: replay episode files and CSV rows."""
    found = []
    replay = run_dir / "replay"
    if replay.is_dir() and (count := sum(1 for p in replay.glob("*.npz"))):
        found.append(f"{count} replay episode file(s)")
    for name in LOGS:
        path = run_dir / name
        if path.is_file() and len(path.read_bytes().splitlines()) > 1:
            found.append(name)
    return found


class Lock:
    """The held lock of one run directory (released by :meth:`release` or when the process ends)."""

    def __init__(self, run_dir: Path, key: str) -> None:
        self.path = run_dir / LOCK
        self.file = open(self.path, "a+")  # noqa: SIM115 (held open for the run's lifetime)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunDirError(f"{key}={run_dir} is in use by {holder}; wait for it to finish, stop it, or choose "
                              f"another {key}") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"PID {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()  # closing the file releases the flock


def claim(run_dir: Path, restart: bool = False, key: str = "run_dir") -> Lock:
    """Create ``run_dir`` if needed and lock it for this process; see the module docstring for what is checked.
    With ``restart``, the old contents move to ``<run_dir>.old-<time>`` first."""
    check_path(run_dir, key)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = Lock(run_dir, key)
    try:
        for directory in (run_dir, run_dir / "replay"):
            if directory.is_dir():
                files.remove_temporaries(directory)
        if restart:
            move_aside(run_dir)
        elif not (run_dir / CHECKPOINT).exists() and (data := has_data(run_dir)):
            raise RunDirError(f"{key}={run_dir} holds a run ({', '.join(data)}) but no {CHECKPOINT}, so it cannot "
                              f"resume: restore {run_dir / CHECKPOINT}, or add restart=true to move the old run "
                              f"aside and start over")
    except BaseException:
        lock.release()
        raise
    return lock


def move_aside(run_dir: Path) -> Path | None:
    """Move everything in ``run_dir`` but its lock to a new sibling ``<name>.old-<time>``; returns it (None if
    there was nothing to move)."""
    entries = [p for p in run_dir.iterdir() if p.name != LOCK]
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
    aside.mkdir()
    for entry in entries:
        entry.rename(aside / entry.name)
    console.print(f"restart=true: moved the previous contents of {run_dir} to {aside}")
    return aside
