"""Typed run configuration (:mod:`.schema`), the names that select groups (:mod:`.registry`) and ``key=value``
overrides, YAML and diffs (:mod:`.overrides`). ``from ssrl import config`` gives all of them."""

from ssrl.config.overrides import (
    apply_overrides,
    diff,
    from_dict,
    load,
    parse_overrides,
    save,
    split_pairs,
    to_dict,
)
from ssrl.config.registry import AGENTS, GROUPS, REPRESENTATIONS
from ssrl.config.schema import (
    CHOICES,
    PPO_REPRESENTATIONS,
    CURLConfig,
    DrQV2Config,
    EncoderConfig,
    MaskedConfig,
    PPOConfig,
    RepresentationConfig,
    SACConfig,
    SpeedConfig,
    SPRConfig,
    TrainConfig,
    WorldModelConfig,
    num_envs,
    validate,
)
from ssrl.errors import ConfigError

__all__ = ["AGENTS", "CHOICES", "CURLConfig", "ConfigError", "DrQV2Config", "EncoderConfig", "GROUPS", "MaskedConfig",
           "PPOConfig", "PPO_REPRESENTATIONS", "REPRESENTATIONS", "RepresentationConfig", "SACConfig", "SPRConfig",
           "SpeedConfig", "TrainConfig", "WorldModelConfig", "apply_overrides", "diff", "from_dict", "load",
           "num_envs", "parse_overrides", "save", "split_pairs", "to_dict", "validate"]
