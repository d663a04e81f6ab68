"""The one registry: the name that selects a group (``agent=drqv2``, ``representation=spr``) -> its config class
and its implementation. The command line, ``ssrl config``, multirun, sweeps, pretraining and ``make_agent`` /
``make_representation`` all read it.

Implementations (and the config classes of objectives that keep theirs beside them) are named by
``"module:Class"`` strings, imported on first use: this module sits at the bottom of the package and imports no
agent or objective. A new one is one new file plus one line here, or, from outside the package, one call::

    from ssrl.config.registry import register_representation
    register_representation("toy", ToyConfig, Toy)   # then: ssrl train representation=toy representation.scale=2
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ssrl.config.schema import (
    CURLConfig,
    DrQV2Config,
    MaskedConfig,
    PPOConfig,
    RepresentationConfig,
    SACConfig,
    SPRConfig,
    WorldModelConfig,
)


def _load(ref: type | str) -> type:
    if isinstance(ref, str):
        module, _, name = ref.partition(":")
        return getattr(importlib.import_module(module), name)
    return ref


@dataclass
class Entry:
    """One registered name: its config dataclass and its implementation, each a class or a ``"module:Class"``
    string (the implementation is None for ``representation=none``)."""

    config: type | str
    target: type | str | None

    def config_class(self) -> type:
        """The config dataclass (importing it the first time)."""
        self.config = _load(self.config)
        return self.config

    def resolve(self) -> type | None:
        """The implementation class (importing it the first time)."""
        if self.target is not None:
            self.target = _load(self.target)
        return self.target


AGENTS: dict[str, Entry] = {
    "sac": Entry(SACConfig, "ssrl.agents.sac:SAC"),
    "drqv2": Entry(DrQV2Config, "ssrl.agents.drqv2:DrQV2"),
    "ppo": Entry(PPOConfig, "ssrl.agents.ppo:PPO"),
}
REPRESENTATIONS: dict[str, Entry] = {
    "none": Entry(RepresentationConfig, None),
    "curl": Entry(CURLConfig, "ssrl.representations.curl:CURL"),
    "spr": Entry(SPRConfig, "ssrl.representations.spr:SPR"),
    "masked": Entry(MaskedConfig, "ssrl.representations.masked:Masked"),
    "world_model": Entry(WorldModelConfig, "ssrl.representations.world_model:WorldModel"),
}
GROUPS: dict[str, dict[str, Entry]] = {"agent": AGENTS, "representation": REPRESENTATIONS}


def _register(group: str, name: str, config: type, target: type | str) -> None:
    if getattr(config, "__dataclass_fields__", {}).get("name") is None:
        raise TypeError(f"{config.__name__} must be a dataclass with a field name: str = {name!r}")
    if config.__dataclass_fields__["name"].default != name:
        raise ValueError(f"{config.__name__}.name defaults to {config.__dataclass_fields__['name'].default!r}; "
                         f"registering it as {group}={name} needs name: str = {name!r}")
    GROUPS[group][name] = Entry(config, target)


def register_agent(name: str, config: type, cls: type | str) -> None:
    """Make ``agent=<name>`` select ``config`` (a dataclass whose ``name`` field defaults to ``name``) and build
    ``cls`` (an :class:`ssrl.agents.base.Agent`)."""
    _register("agent", name, config, cls)


def register_representation(name: str, config: type, cls: type | str) -> None:
    """Make ``representation=<name>`` select ``config`` (a :class:`~ssrl.config.schema.RepresentationConfig`
    subclass whose ``name`` defaults to ``name``) and build ``cls`` (an
    :class:`ssrl.representations.base.Representation`)."""
    if not issubclass(config, RepresentationConfig):
        raise TypeError(f"{config.__name__} must subclass ssrl.config.RepresentationConfig (weight, lr)")
    _register("representation", name, config, cls)


def implementation(group: str, name: str) -> type | None:
    """The class registered as ``<group>=<name>``."""
    return GROUPS[group][name].resolve()
