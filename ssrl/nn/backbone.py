"""Pretrained visual backbones: one file format for ``ssrl pretrain``, ``ssrl train``, ``ssrl transfer`` and SB3.

A backbone directory holds ``backbone.safetensors`` (the weights) and ``backbone.json`` (the card): architecture
and its arguments, input spec (channels, frame stack, size, dtype, normalisation), feature dimension and
provenance (data, objective, steps, ssrl version). The card stores a SHA-256 of the weights and the weights file
stores a SHA-256 of the card, so editing either one is detected at load time.

:func:`load_backbone` also reads a plain torchvision-style ResNet-18 state dict from a local ``.pt``/``.pth`` file
(the shape of R3M/VIP/MVP-style checkpoints; prefixes such as ``module.`` or ``convnet.`` are stripped, ``fc.`` is
dropped). Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ssrl import __version__
from ssrl.config import EncoderConfig
from ssrl.errors import BackboneError
from ssrl.nn.encoders import PixelEncoder

WEIGHTS, CARD = "backbone.safetensors", "backbone.json"
FORMAT, FORMAT_VERSION = "ssrl-backbone", 1
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
STATE_DICT_PREFIXES = ("module.", "convnet.", "encoder.", "backbone.", "model.", "resnet.")


# ------------------------------------------------------------------------------------------- ResNet-18
class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same parameter names)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18 trunk with torchvision's parameter names (no ``fc``), applied to each RGB frame of a stack.

    Input: uint8 (or float in [0, 255]) images (B, 3 * frame_stack, H, W), ImageNet-normalised inside.
    Output: the 512-d pooled features of each frame, concatenated (``512 * frame_stack``).
    """

    def __init__(self, frame_stack: int = 1, size: int = 224) -> None:
        super().__init__()
        self.frame_stack, self.size = frame_stack, size
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        planes = [64, 128, 256, 512]
        for i, p in enumerate(planes):
            prev = planes[max(i - 1, 0)]
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(prev, p, stride), BasicBlock(p, p, 1)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        self.features_dim = 512 * frame_stack
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self._frames(obs)).flatten(1).reshape(len(obs), self.features_dim)

    def trunk(self, obs: torch.Tensor) -> torch.Tensor:
        """``layer4``'s maps, the frames stacked on channels: ``(B, 512 * frame_stack, h, w)``."""
        x = self._frames(obs)
        return x.reshape(len(obs), -1, *x.shape[2:])

    def _frames(self, obs: torch.Tensor) -> torch.Tensor:
        b, c, h, w = obs.shape
        assert c == 3 * self.frame_stack, f"ResNet18 expects {3 * self.frame_stack} channels, got {c}"
        x = (obs.reshape(b * self.frame_stack, 3, h, w).float() - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ------------------------------------------------------------------------------------------- architectures
def _pixel_encoder(args: dict[str, Any]) -> nn.Module:
    fields = {f.name for f in dataclasses.fields(EncoderConfig)}
    cfg = EncoderConfig(**{k: v for k, v in args.items() if k in fields})
    return PixelEncoder(gym.spaces.Box(0, 255, tuple(args["in_shape"]), np.uint8), cfg)


def _resnet18(args: dict[str, Any]) -> nn.Module:
    return ResNet18(args["frame_stack"], args["size"])


ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {"pixel_encoder": _pixel_encoder,
                                                                    "resnet18": _resnet18}
NORMALIZATION = {"pixel_encoder": "x / 255 - 0.5", "resnet18": "imagenet per frame: (x / 255 - mean) / std"}


def pixel_encoder_args(in_shape: tuple[int, ...], cfg: EncoderConfig) -> dict[str, Any]:
    """The card arguments that rebuild a :class:`PixelEncoder` for images of ``in_shape``."""
    return {"in_shape": list(in_shape), "feature_dim": cfg.feature_dim, "num_filters": cfg.num_filters,
            "num_layers": cfg.num_layers}


# ---------------------------------------------------------------------------------------------- Backbone
class Backbone(nn.Module):
    """A feature extractor plus its card. ``freeze()`` stops gradients and keeps it in eval mode for good
    (no BatchNorm statistics drift when the surrounding model calls ``train()``)."""

    def __init__(self, net: nn.Module, card: dict[str, Any]) -> None:
        super().__init__()
        self.net, self.card = net, card
        self.features_dim = int(card["feature_dim"])
        spec = card["input"]
        self.input_shape = (spec["channels"], spec["size"], spec["size"])
        self.frozen = False

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def maps(self, obs: torch.Tensor) -> torch.Tensor:
        """The conv trunk's ``(B, C, h, w)`` feature maps (before the pooling or projection ``forward`` ends with)."""
        return self.net.trunk(obs)

    def maps_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of :meth:`maps`."""
        training, param = self.training, next(self.parameters())
        self.train(False)  # no BatchNorm statistics from the dummy image
        with torch.no_grad():
            shape = tuple(self.maps(torch.zeros(1, *self.input_shape, device=param.device)).shape[1:])
        self.train(training)
        return shape

    def freeze(self) -> Backbone:
        self.requires_grad_(False)
        self.frozen = True
        return self.train(False)

    def train(self, mode: bool = True) -> Backbone:
        return super().train(mode and not self.frozen)

    def check_input(self, space: gym.Space, where: str) -> None:
        """Raise BackboneError unless ``space`` is the uint8 image space this backbone was built for."""
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and space.shape == self.input_shape):
            got = f"{space.dtype}{list(space.shape)}" if isinstance(space, gym.spaces.Box) else str(space)
            raise BackboneError(
                f"{where}: observations are {got} but the backbone takes uint8{list(self.input_shape)} "
                f"({self.card['input']['frame_stack']} stacked RGB frames of {self.input_shape[1]}px); "
                f"match frame_stack= and size= to the backbone")

    def save(self, out: str | Path) -> Path:
        """Write ``backbone.safetensors`` + ``backbone.json`` into directory ``out``; returns ``out``."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        card = {**self.card, "weights_sha256": _weights_hash(tensors)}
        save_file(tensors, str(out / WEIGHTS), metadata={"card_sha256": _card_hash(card), "format": FORMAT})
        (out / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
        self.card = card
        return out


def make_card(architecture: str, args: dict[str, Any], net: nn.Module, *, frame_stack: int, size: int,
              provenance: dict[str, Any]) -> dict[str, Any]:
    """A card for ``net`` (built by ``ARCHITECTURES[architecture](args)``)."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "architecture": architecture, "args": args,
        "input": {"channels": 3 * frame_stack, "frame_stack": frame_stack, "size": size, "dtype": "uint8",
                  "layout": "channels-first, oldest frame first", "range": [0, 255],
                  "normalization": NORMALIZATION[architecture] + " (done inside the backbone)"},
        "feature_dim": int(net.features_dim),
        "provenance": {"ssrl_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       **provenance},
    }


def _weights_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _card_hash(card: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- loading
def load_backbone(path: str | Path, *, frame_stack: int = 1, size: int = 224) -> Backbone:
    """Rebuild a backbone from a directory (or either file) written by :meth:`Backbone.save`, or from a
    torchvision-style ResNet-18 state dict (``.pt``/``.pth``/``.bin``; ``frame_stack`` and ``size`` then describe
    the input, since such files carry no card)."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return _load_resnet_state_dict(path, frame_stack, size)
    directory = path.parent if path.name in (WEIGHTS, CARD) else path
    card_path, weights_path = directory / CARD, directory / WEIGHTS
    for p in (card_path, weights_path):
        if not p.exists():
            raise BackboneError(f"{p} not found: a backbone is a directory with {WEIGHTS} and {CARD}")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise BackboneError(f"{card_path} is not valid JSON ({e})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise BackboneError(f"{card_path} is not an {FORMAT} card")
    if card.get("format_version") != FORMAT_VERSION:
        version = card.get("format_version")
        raise BackboneError(f"{card_path}: format_version {version!r}; this ssrl reads {FORMAT_VERSION}")
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(weights_path), "pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(weights_path))
    except Exception as e:  # safetensors raises its own error types for truncated/foreign files
        raise BackboneError(f"{weights_path} is unreadable ({type(e).__name__}: {e})") from None
    if metadata.get("card_sha256") != _card_hash(card):
        raise BackboneError(f"{card_path} does not match {weights_path}: the card was edited or belongs to other "
                            "weights (its hash differs from the one stored with the weights)")
    if card.get("weights_sha256") != _weights_hash(tensors):
        raise BackboneError(f"{weights_path}: weights do not match the hash in {card_path} (modified file?)")
    if card.get("architecture") not in ARCHITECTURES:
        raise BackboneError(f"{card_path}: unknown architecture {card.get('architecture')!r}; "
                            f"known: {', '.join(ARCHITECTURES)}")
    try:
        net = ARCHITECTURES[card["architecture"]](card["args"])
        net.load_state_dict(tensors)
    except (KeyError, TypeError, RuntimeError) as e:
        raise BackboneError(f"{card_path}: cannot rebuild {card['architecture']} from its args ({e})") from None
    return Backbone(net, card)


def _load_resnet_state_dict(path: Path, frame_stack: int, size: int) -> Backbone:
    if not path.exists():
        raise BackboneError(f"{path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BackboneError(f"{path} is not a readable torch state dict ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "convnet"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path} does not hold a state dict of tensors")
    cleaned = {}
    for key, value in state.items():
        while key.startswith(STATE_DICT_PREFIXES):
            key = key.split(".", 1)[1]
        if not key.startswith("fc."):
            cleaned[key] = value
    net = ResNet18(frame_stack, size)
    missing, unexpected = net.state_dict().keys() - cleaned.keys(), cleaned.keys() - net.state_dict().keys()
    if missing or unexpected:
        raise BackboneError(f"{path} is not a ResNet-18 state dict: missing {sorted(missing)[:5]}, "
                            f"unexpected {sorted(unexpected)[:5]} (after stripping {', '.join(STATE_DICT_PREFIXES)})")
    try:
        net.load_state_dict(cleaned)
    except RuntimeError as e:
        raise BackboneError(f"{path}: shapes do not match ResNet-18 ({e})") from None
    card = make_card("resnet18", {"frame_stack": frame_stack, "size": size}, net, frame_stack=frame_stack, size=size,
                     provenance={"source": str(path), "objective": "external state dict"})
    return Backbone(net, card)


def pretrained_encoder(cfg: EncoderConfig, space: gym.Space) -> Backbone:
    """The encoder for ``encoder.pretrained=PATH``: the backbone, checked against ``space`` and frozen if
    ``encoder.freeze``."""
    backbone = load_backbone(cfg.pretrained)
    backbone.check_input(space, f"encoder.pretrained={cfg.pretrained}")
    return backbone.freeze() if cfg.freeze else backbone
