"""Atomic file writes, once for every file ssrl writes (checkpoints, CSV rewrites, episode files, meta, configs):
the content goes to a temporary ``*.tmp`` file in the same directory, is flushed to disk and then renamed over
the target, so a kill at any point leaves either the old file or the new one, never a partial one. A killed
write can leave its temporary file behind; :func:`remove_temporaries` clears those when a run starts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "wb", newline: str | None = None) -> Iterator[IO]:
    """A file to write ``path``'s new content into; it replaces ``path`` when the block ends without error."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_writer(path, "w") as f:
        f.write(text)


# Temporary files of killed writes: this module's, and those of earlier ssrl versions (checkpoint.tmp, tmp*.tmp).
TEMPORARY = (f".*{TMP_SUFFIX}", f"tmp*{TMP_SUFFIX}", *(f"{name}{TMP_SUFFIX}" for name in
             ("checkpoint", "meta", "train", "eval", "pretrain", "config")))


def remove_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files killed writes left in ``directory`` (not recursive); returns them."""
    stale = sorted({p for pattern in TEMPORARY for p in Path(directory).glob(pattern) if p.is_file()})
    for path in stale:
        path.unlink()
    return stale
