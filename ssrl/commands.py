"""Command-line handlers for the backbone workflow: ``ssrl collect``, ``ssrl data``, ``ssrl pretrain`` and
``ssrl transfer`` (``ssrl.cli`` dispatches to :data:`COMMANDS`)."""

from __future__ import annotations

import json
from collections.abc import Callable

from ssrl.errors import ConfigError

USAGE = """  collect   reward-free data:   ssrl collect env=mw/reach-v3 policy=random|scripted|checkpoint:RUN_DIR frames=10000 out=data/reach
  data      ssrl data info DIR | ssrl data export run_dir=RUN_DIR out=DIR
  pretrain  ssrl pretrain representation=curl data=DIR steps=10000 out=backbones/curl
  transfer  ssrl transfer backbone=PATH|scratch|random tasks=reach-v3 demos=10 seeds=3 rollouts=50 out=results/bc
"""


def options(command: str, args: list[str], defaults: dict[str, str]) -> dict[str, str]:
    """``key=value`` arguments checked against ``defaults`` (which also gives the default values)."""
    opts = dict(defaults)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"ssrl {command}: unknown argument '{arg}'; expected {', '.join(k + '=' for k in defaults)}")
        opts[key] = value
    return opts


def _int(command: str, opts: dict[str, str], key: str) -> int:
    try:
        return int(float(opts[key]))
    except ValueError:
        raise ConfigError(f"ssrl {command}: {key}={opts[key]!r} is not an integer") from None


def _bool(opts: dict[str, str], key: str) -> bool:
    return opts[key].lower() in ("1", "true", "yes", "on")


def _print(info: dict) -> None:
    print(json.dumps(info, indent=2))


def collect(args: list[str]) -> int:
    from ssrl.experiments.collect import collect as run

    opts = options("collect", args, {"env": "", "policy": "random", "frames": "10000", "out": "", "size": "84",
                                     "frame_stack": "3", "action_repeat": "0", "render": "fast", "seed": "0",
                                     "progress": "true"})
    if not opts["env"] and not opts["policy"].startswith("checkpoint:") or not opts["out"]:
        raise ConfigError("ssrl collect needs env=<id> (or policy=checkpoint:RUN_DIR) and out=<dir>")
    _print(run(opts["env"], opts["policy"], _int("collect", opts, "frames"), opts["out"],
               size=_int("collect", opts, "size"), frame_stack=_int("collect", opts, "frame_stack"),
               action_repeat=_int("collect", opts, "action_repeat"), render=opts["render"],
               seed=_int("collect", opts, "seed"), progress=_bool(opts, "progress")))
    return 0


def data(args: list[str]) -> int:
    from ssrl.data import dataset
    from ssrl.experiments.collect import export_run

    if args[:1] == ["info"] and len(args) == 2:
        _print(dataset.info(args[1]))
        return 0
    if args[:1] == ["export"]:
        opts = options("data export", args[1:], {"run_dir": "", "out": ""})
        if not opts["run_dir"] or not opts["out"]:
            raise ConfigError("ssrl data export needs run_dir=<run> and out=<dir>")
        _print(export_run(opts["run_dir"], opts["out"]))
        return 0
    raise ConfigError("usage: ssrl data info DIR | ssrl data export run_dir=RUN_DIR out=DIR")


def pretrain(args: list[str]) -> int:
    from ssrl.experiments.pretrain import Pretrainer, parse

    Pretrainer(parse(args)).run()
    return 0


def transfer(args: list[str]) -> int:
    from ssrl.experiments.transfer import parse, run

    run(parse(args))
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {"collect": collect, "data": data, "pretrain": pretrain,
                                                    "transfer": transfer}
