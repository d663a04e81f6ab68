"""Errors that mean "the user's input is wrong"; the command line prints them without a traceback."""

import importlib.util


class ConfigError(ValueError):
    """A config key or value the user gave is wrong; the message names it."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not belong to this run; the message says which and why."""


class DatasetError(ValueError):
    """A dataset directory or episode file that cannot be used; the message names the file and the problem."""


class BackboneError(ValueError):
    """A backbone file or card that is missing, malformed, tampered with or does not fit; the message says which."""


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (a file, not writable, in use, or a run without its
    checkpoint); the message says why and what to do. Raised before anything in it changes."""


class DivergenceError(FloatingPointError):
    """Training produced a non-finite (or exploded) loss or action; the message names it, the frame and the
    last good checkpoint."""


def require_extra(extra: str, *modules: str) -> None:
    """Raise ImportError naming the pip extra that installs ``modules`` when any of them is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"{', '.join(missing)} not installed; install the extra: pip install 'ssrl[{extra}]'")
