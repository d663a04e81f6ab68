"""``key=value`` overrides, YAML round trips and config diffs for any config dataclass.

Every override is checked against the dataclass fields and types before any work starts; a mistake raises
:class:`ConfigError` naming it (with close matches).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ssrl import files
from ssrl.config.registry import GROUPS
from ssrl.config.schema import TrainConfig, validate
from ssrl.errors import ConfigError


def _close(word: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=3)
    return f" Did you mean: {', '.join(match)}?" if match else ""


def _coerce(key: str, text: str, kind: Any) -> Any:
    """Convert the command-line string ``text`` to the field type ``kind``."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(kind):
            try:
                return _coerce(key, text, option)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}={text!r}: not a valid value ({'; '.join(errors)})")
    if kind is type(None):
        if text.lower() in ("none", "null", ""):
            return None
        raise ConfigError(f"{key}: expected none")
    if kind is bool:
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}={text!r}: expected true or false")
    if kind is int:
        try:
            return int(float(text)) if float(text).is_integer() else int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected a number") from None
    return str(text)


def _field_types(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def _set(cfg: TrainConfig, key: str, text: str) -> None:
    parts = key.split(".")
    target: Any = cfg
    for depth, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(target)]
        prefix = ".".join(parts[:depth])
        if part not in names:
            where = f"in '{prefix}'" if prefix else "in the config"
            raise ConfigError(f"unknown key '{key}': no '{part}' {where}.{_close(part, names)}")
        if depth < len(parts) - 1:
            target = getattr(target, part)
            if not dataclasses.is_dataclass(target):
                raise ConfigError(f"unknown key '{key}': '{'.'.join(parts[: depth + 1])}' has no sub-keys")
    name = parts[-1]
    if dataclasses.is_dataclass(getattr(target, name)):
        example = dataclasses.fields(getattr(target, name))[1].name
        raise ConfigError(f"'{key}' is a group; set its fields, e.g. {key}.{example}=...")
    setattr(target, name, _coerce(key, text, _field_types(target)[name]))


def _select_group(cfg: TrainConfig, group: str, name: str) -> None:
    options = GROUPS[group]
    if name not in options:
        raise ConfigError(f"unknown {group} '{name}'. Choose one of: {', '.join(options)}.{_close(name, options)}")
    setattr(cfg, group, options[name].config_class()())


def split_pairs(args: list[str]) -> list[tuple[str, str]]:
    """``key=value`` strings as stripped ``(key, value)`` pairs; anything else is a :class:`ConfigError`."""
    pairs = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got '{arg}'")
        pairs.append((key.strip(), value.strip()))
    return pairs


def apply_overrides(cfg: Any, args: list[str]) -> Any:
    """Apply ``key=value`` strings to any config dataclass (no validation). Group selections (``agent=drqv2``)
    apply first; ``encoder=pretrained:PATH`` is short for ``encoder.pretrained=PATH``."""
    pairs = [("encoder.pretrained", value.split(":", 1)[1])
             if key == "encoder" and value.startswith("pretrained:") else (key, value)
             for key, value in split_pairs(args)]
    for key, value in pairs:
        if key in GROUPS and hasattr(cfg, key):
            _select_group(cfg, key, value)
    for key, value in pairs:
        if key not in GROUPS or not hasattr(cfg, key):
            _set(cfg, key, value)
    return cfg


def parse_overrides(args: list[str], base: TrainConfig | None = None) -> TrainConfig:
    """Build a config from ``key=value`` strings (see :func:`apply_overrides`) and validate it."""
    cfg = apply_overrides(base if base is not None else TrainConfig(), args)
    validate(cfg)
    return cfg


# ------------------------------------------------------------------------------------------ serialisation
# Keys added with a default that changed what a group does: a stored config from before the key ran this value.
LEGACY_VALUES: dict[tuple[str, str, str], Any] = {("representation", "masked", "mask_space"): "input"}


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def complete(stored: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A stored config dict (a run's, from an older ssrl) with the keys it predates filled in: the value it ran
    with where the key's default changed the behaviour (``LEGACY_VALUES``), else the key's default in
    ``defaults`` (an empty ``defaults`` adds only the former)."""
    out = dict(stored)
    for (group, name, key), value in LEGACY_VALUES.items():
        section = out.get(group)
        if isinstance(section, dict) and section.get("name") == name and key not in section:
            out[group] = {**section, key: value}
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict) and out[key].get("name") == value.get("name"):
            out[key] = complete(out[key], value)
    return out


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a config from :func:`to_dict` output (e.g. a run's ``config.yaml``), checking every key; keys the
    dict predates take their defaults, or the value they ran with where that differs (:func:`complete`)."""
    data = complete(data, {})
    cfg = TrainConfig()
    for group in GROUPS:
        if isinstance(data.get(group), dict):
            _select_group(cfg, group, data[group].get("name", getattr(cfg, group).name))
    args = []

    def flatten(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}" if prefix else k, v)
        elif not prefix.endswith(".name"):
            args.append((prefix, value))

    flatten("", data)
    for key, value in args:
        _set(cfg, key, "none" if value is None else str(value))
    validate(cfg)
    return cfg


def save(cfg: TrainConfig, path: Path) -> None:
    files.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load(path: Path) -> TrainConfig:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    return from_dict(data)


def diff(a: Any, b: Any) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two configs, as ``{dotted_key: (a_value, b_value)}``."""
    return diff_dicts(to_dict(a), to_dict(b))


def diff_dicts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """:func:`diff` of two nested dicts (e.g. a config stored in a checkpoint and a new one)."""
    out: dict[str, tuple[Any, Any]] = {}

    def walk(prefix: str, x: Any, y: Any) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(f"{prefix}.{k}" if prefix else k, x.get(k), y.get(k))
        elif x != y:
            out[prefix] = (x, y)

    walk("", a, b)
    return out
