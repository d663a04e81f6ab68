"""The ``ssrl`` command line: one table of commands (:data:`COMMANDS`), each a handler ``f(args) -> exit code``
taking ``key=value`` arguments (``sweep`` and ``report`` parse their own flags). Every expected failure is one
line ``ssrl <command>: error: ...`` and exit code 2, raised before any directory is created; ``--debug`` (or
``SSRL_DEBUG=1``) shows the traceback instead. An unexpected exception (a bug) always shows its traceback."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from ssrl import config as config_lib
from ssrl.errors import BackboneError, CheckpointError, ConfigError, DatasetError, RunDirError

USAGE = """ssrl <command> [key=value ...]

commands:
  train     train an agent:   ssrl train env=dmc/cheetah-run agent=sac representation=none frames=100000 seed=0
            agent=ppo obs=state: PPO on batched envs (num_envs=4096 device=cuda on a GPU, num_envs=32 device=cpu)
            agent=sac obs=state num_envs=32: SAC/DrQ-v2 on batched envs with a replay on the training device
  eval      evaluate a run:   ssrl eval run_dir=runs/x episodes=10 video=true
  ppo       short for `ssrl train agent=ppo obs=state ...`
  config    print the resolved config for the given overrides (all keys, defaults included)
  tasks     list environment ids
  sweep     hyperparameter sweep:  ssrl sweep SPEC.yaml [--address RAY_ADDRESS] [--export wandb]
  report    aggregate results:     ssrl report RUN_DIRS... --out DIR [--reference DIR]
  collect   reward-free data:   ssrl collect env=mw/reach-v3 policy=random|scripted|checkpoint:RUN_DIR
                                frames=10000 out=data/reach
  data      ssrl data info DIR | ssrl data export run_dir=RUN_DIR out=DIR
  pretrain  ssrl pretrain representation=curl data=DIR steps=10000 out=backbones/curl
  transfer  ssrl transfer backbone=PATH|scratch|random tasks=reach-v3 demos=10 seeds=3 rollouts=50 out=results/bc

every command: --debug (or SSRL_DEBUG=1) shows the traceback of an error; train, ppo and pretrain take
  --restart (restart=true): move an existing run in run_dir/out aside to <dir>.old-<time> and start over

multirun: comma lists expand to a grid, run in parallel (jobs=N) and resumed when rerun:
  ssrl train env=dmc/cheetah-run,dmc/walker-walk representation=none seeds=5 jobs=2
  ssrl train suite=dmc100k seeds=5          (suites: dmc100k, dmc500k, dmc-hard)
"""
VIDEO_SIZE = 256
# What the commands print as one line without a traceback: wrong input, a run dir that cannot be used, a diverged
# run (FloatingPointError: DivergenceError), the filesystem (OSError: missing file, permission, disk full) and
# a missing optional extra (ImportError; the message names it).
USER_ERRORS = (ConfigError, CheckpointError, DatasetError, BackboneError, RunDirError, FloatingPointError, OSError,
               ImportError)


# ------------------------------------------------------------------------------------------------ options
def options(args: list[str], defaults: dict[str, str]) -> dict[str, str]:
    """``key=value`` arguments checked against ``defaults`` (which also gives the default values)."""
    opts = dict(defaults)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            expected = ", ".join(k + "=" for k in defaults)
            raise ConfigError(f"unknown argument '{arg}'; expected {expected}")
        opts[key] = value
    return opts


def _int(opts: dict[str, str], key: str) -> int:
    try:
        return int(float(opts[key]))
    except ValueError:
        raise ConfigError(f"{key}={opts[key]!r} is not an integer") from None


def _bool(opts: dict[str, str], key: str) -> bool:
    return opts[key].lower() in ("1", "true", "yes", "on")


def _print(info: dict) -> None:
    print(json.dumps(info, indent=2))


# ----------------------------------------------------------------------------------------------- commands
def train(args: list[str]) -> int:
    from ssrl.experiments import multirun

    if multirun.is_multirun(args):
        return multirun.main(args)
    cfg = config_lib.parse_overrides(args)
    if cfg.experiment and not cfg.run_dir:  # runs/<experiment>/<overrides>, as multirun names them
        cfg.run_dir = str(Path("runs") / cfg.experiment / multirun.run_name(args))
    if cfg.agent.name == "ppo":
        from ssrl.experiments.onpolicy import train_ppo

        train_ppo(cfg)
    elif config_lib.derive(cfg).batched:
        from ssrl.experiments.offpolicy import BatchedTrainer

        BatchedTrainer(cfg).train()
    else:
        from ssrl.experiments.offpolicy import Trainer

        Trainer(cfg).train()
    return 0


def ppo(args: list[str]) -> int:
    return train(["agent=ppo", "obs=state", *args])


def evaluate(args: list[str]) -> int:
    import imageio.v2 as imageio
    import numpy as np

    from ssrl.experiments.offpolicy import load_run
    from ssrl.experiments.onpolicy import is_ppo_run, load_policy
    from ssrl.runtime.evaluate import evaluate as run_episodes

    opts = options(args, {"run_dir": "", "episodes": "10", "video": "false", "device": "auto"})
    if not opts["run_dir"]:
        raise ConfigError("ssrl eval needs run_dir=<path of a training run>")
    episodes = _int(opts, "episodes")
    if episodes < 1:
        raise ConfigError(f"episodes={episodes}: must be at least 1")
    run_dir = Path(opts["run_dir"])
    want_video = opts["video"].lower() not in ("false", "0", "no", "")
    load = load_policy if is_ppo_run(run_dir) else load_run  # PPO: its policy in the run's single env
    cfg, agent, env = load(run_dir, opts["device"], render_size=VIDEO_SIZE if want_video else None)
    frames: list[np.ndarray] | None = [] if want_video else None
    returns = run_episodes(agent, env, episodes, cfg.seed + 10_000, 0, frames)
    print(f"{cfg.env}: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
    if frames:
        path = Path(opts["video"]) if opts["video"].endswith(".mp4") else run_dir / "eval.mp4"
        imageio.mimsave(path, frames, fps=30)
        print(f"video: {path}")
    return 0


def show_config(args: list[str]) -> int:
    print(yaml.safe_dump(config_lib.to_dict(config_lib.parse_overrides(args)), sort_keys=False))
    return 0


def tasks(args: list[str]) -> int:
    from ssrl.envs import list_tasks

    options(args, {})
    print("\n".join(list_tasks()))
    return 0


def collect(args: list[str]) -> int:
    from ssrl.experiments.collect import collect as run

    opts = options(args, {"env": "", "policy": "random", "frames": "10000", "out": "", "size": "84",
                                     "frame_stack": "3", "action_repeat": "0", "render": "fast", "seed": "0",
                                     "progress": "true"})
    if not opts["env"] and not opts["policy"].startswith("checkpoint:") or not opts["out"]:
        raise ConfigError("ssrl collect needs env=<id> (or policy=checkpoint:RUN_DIR) and out=<dir>")
    _print(run(opts["env"], opts["policy"], _int(opts, "frames"), opts["out"],
               size=_int(opts, "size"), frame_stack=_int(opts, "frame_stack"),
               action_repeat=_int(opts, "action_repeat"), render=opts["render"],
               seed=_int(opts, "seed"), progress=_bool(opts, "progress")))
    return 0


def data(args: list[str]) -> int:
    from ssrl.data import dataset
    from ssrl.experiments.collect import export_run

    if args[:1] == ["info"] and len(args) == 2:
        _print(dataset.info(args[1]))
        return 0
    if args[:1] == ["export"]:
        opts = options(args[1:], {"run_dir": "", "out": ""})
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


def _own_parser(module: str) -> Callable[[list[str]], int]:
    """A command with its own argparse ``main(argv) -> exit code``."""
    return lambda args: importlib.import_module(module).main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train, "eval": evaluate, "ppo": ppo, "config": show_config, "tasks": tasks,
    "sweep": _own_parser("ssrl.experiments.sweep"), "report": _own_parser("ssrl.experiments.report"),
    "collect": collect, "data": data, "pretrain": pretrain, "transfer": transfer,
}  # fmt: skip
OWN_PARSER = {"sweep", "report"}  # they print their own help and errors


def one_line(error: BaseException) -> str:
    """The error's message on one line (what the boundary prints)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if not isinstance(error, OSError) or error.filename is None or str(error.filename) in text \
        else f"{text}: {error.filename}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("SSRL_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ssrl: error: unknown command '{command}'; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if command not in OWN_PARSER:
        if "-h" in args or "--help" in args:
            print(USAGE, end="")
            return 0
        args = ["restart=true" if a == "--restart" else a for a in args]
    try:
        return COMMANDS[command](args)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"ssrl {command}: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
