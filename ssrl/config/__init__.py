"""Typed run configuration (:mod:`.schema`), the names that select groups (:mod:`.registry`) and ``key=value``
overrides, YAML and diffs (:mod:`.overrides`). ``from ssrl import config`` gives all of them."""

from ssrl.config.overrides import (
    apply_overrides,
    diff,
    diff_dicts,
    from_dict,
    load,
    parse_overrides,
    save,
    split_pairs,
    to_dict,
)
from ssrl.config.registry import (
    AGENTS,
    GROUPS,
    REPRESENTATIONS,
    implementation,
    register_agent,
    register_representation,
)
from ssrl.config.schema import (
    CHOICES,
    PPO_REPRESENTATIONS,
    CURLConfig,
    Derived,
    DrQV2Config,
    EncoderConfig,
    MaskedConfig,
    OffPolicyConfig,
    PPOConfig,
    RepresentationConfig,
    SACConfig,
    SpeedConfig,
    SPRConfig,
    TrainConfig,
    WorldModelConfig,
    derive,
    validate,
)
from ssrl.errors import ConfigError

__all__ = ["AGENTS", "CHOICES", "CURLConfig", "ConfigError", "Derived", "OffPolicyConfig", "derive", "DrQV2Config", "EncoderConfig", "GROUPS", "MaskedConfig",
           "PPOConfig", "PPO_REPRESENTATIONS", "REPRESENTATIONS", "RepresentationConfig", "SACConfig", "SPRConfig",
           "SpeedConfig", "TrainConfig", "WorldModelConfig", "apply_overrides", "diff", "diff_dicts", "from_dict", "implementation",
           "load", "register_agent", "register_representation", "parse_overrides", "save", "split_pairs", "to_dict", "validate"]
