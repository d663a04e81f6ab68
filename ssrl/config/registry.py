"""Names the command line selects a group by (``agent=drqv2``, ``representation=spr``) -> config class."""

from __future__ import annotations

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

AGENTS: dict[str, type] = {"sac": SACConfig, "drqv2": DrQV2Config, "ppo": PPOConfig}
REPRESENTATIONS: dict[str, type] = {"none": RepresentationConfig, "curl": CURLConfig, "spr": SPRConfig,
                                    "masked": MaskedConfig, "world_model": WorldModelConfig}
GROUPS: dict[str, dict[str, type]] = {"agent": AGENTS, "representation": REPRESENTATIONS}
