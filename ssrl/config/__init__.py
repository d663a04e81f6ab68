"""Typed run configuration (:mod:`.schema`), the names that select groups (:mod:`.registry`) and ``key=value``
overrides, YAML and diffs (:mod:`.overrides`). ``from ssrl import config`` gives all of them."""

from ssrl.config.overrides import (
    apply_overrides,
    complete,
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
    GuardConfig,
    MaskedConfig,
    ObjectiveConfig,
    OffPolicyConfig,
    PPOConfig,
    RepresentationConfig,
    SACConfig,
    SpeedConfig,
    SPRConfig,
    TrainConfig,
    WorldModelConfig,
    check_ranges,
    derive,
    validate,
)
from ssrl.errors import ConfigError

__all__ = ["AGENTS", "apply_overrides", "CHOICES", "check_ranges", "complete", "ConfigError", "CURLConfig", "derive",
           "Derived", "diff", "diff_dicts", "DrQV2Config", "EncoderConfig", "from_dict", "GROUPS", "GuardConfig",
           "implementation", "load", "MaskedConfig", "ObjectiveConfig", "OffPolicyConfig", "parse_overrides",
           "PPO_REPRESENTATIONS", "PPOConfig", "register_agent", "register_representation", "RepresentationConfig",
           "REPRESENTATIONS", "SACConfig", "save", "SpeedConfig", "split_pairs", "SPRConfig", "to_dict",
           "TrainConfig", "validate", "WorldModelConfig"]
