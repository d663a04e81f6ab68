"""Errors that mean "the user's input is wrong"; the command line prints them without a traceback."""


class ConfigError(ValueError):
    """A config key or value the user gave is wrong; the message names it."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not belong to this run; the message says which and why."""
