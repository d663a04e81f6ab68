"""Stable-Baselines3 integration: an ssrl backbone as an SB3 features extractor.

    from stable_baselines3 import SAC
    from ssrl.integrations.sb3 import policy_kwargs
    model = SAC("CnnPolicy", env, policy_kwargs=policy_kwargs("backbones/curl", freeze=True))

ssrl backbones take uint8-range images and normalise inside, so :func:`policy_kwargs` turns SB3's own image
scaling off (``normalize_images=False``); otherwise SB3 would divide by 255 first and the backbone would see
images 255x too dark. Install with ``pip install 'ssrl[sb3]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from ssrl.nn.backbone import Backbone, load_backbone

try:
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
except ImportError:
    raise ImportError("ssrl.integrations.sb3 needs stable-baselines3: pip install 'ssrl[sb3]'") from None


class BackboneExtractor(BaseFeaturesExtractor):
    """Features from an ssrl backbone (a path for :func:`ssrl.load_backbone`, or a loaded :class:`Backbone`).

    ``freeze=True`` keeps its weights and BatchNorm statistics fixed; ``False`` lets SB3's optimizer train it.
    Each extractor loads its own copy, so SB3's separate actor and critic extractors never share weights.
    """

    def __init__(self, observation_space: gym.spaces.Box, backbone: str | Path | Backbone, freeze: bool = True) -> None:
        net = load_backbone(backbone) if isinstance(backbone, (str, Path)) else backbone
        net.check_input(observation_space, "SB3 observation space")
        super().__init__(observation_space, net.features_dim)
        self.backbone = net.freeze() if freeze else net

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.backbone(observations)


def policy_kwargs(backbone: str | Path, freeze: bool = True, **extra: Any) -> dict[str, Any]:
    """``policy_kwargs`` for an SB3 ``CnnPolicy`` that encodes images with ``backbone``."""
    return {"features_extractor_class": BackboneExtractor,
            "features_extractor_kwargs": {"backbone": str(backbone), "freeze": freeze},
            "normalize_images": False, **extra}
