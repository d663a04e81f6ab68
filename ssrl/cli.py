"""The ``ssrl`` command line: one table of commands (:data:`COMMANDS`), each a handler ``f(args) -> exit code``
taking ``key=value`` arguments (``sweep`` and ``report`` parse their own flags). Every expected failure is one
line ``ssrl <command>: error: ...`` and exit code 2, raised before any directory is created; ``--debug`` (or
``SSRL_DEBUG=1``) shows the traceback instead. An unexpected exception (a bug) always shows its traceback."""

from __future__ import annotations

import importlib
import json
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

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
  data      ssrl data info DIR | ssrl data export run_dir=RUN_DIR out=DIR | ssrl data merge DIR DIR... out=DIR
  pretrain  ssrl pretrain representation=curl data=DIR steps=10000 out=backbones/curl
  transfer  ssrl transfer backbone=PATH|scratch|random tasks=reach-v3 demos=10 seeds=3 rollouts=50 out=results/bc

every command: --debug (or SSRL_DEBUG=1) shows the traceback of an error; train, ppo and pretrain take
  --restart (restart=true): move an existing run in run_dir/out aside to <dir>.old-<time> and start over

multirun: comma lists expand to a grid, run in parallel (jobs=N) and resumed when rerun:
  ssrl train env=dmc/cheetah-run,dmc/walker-walk representation=none seeds=5 jobs=2
  ssrl train suite=dmc100k seeds=5          (suites: dmc100k, dmc500k, dmc-hard)

ssrl <command> --help lists the command's keys with their defaults and descriptions;
ssrl config --describe KEY gives one key's type, default, description and allowed values.
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

    opts = options(args, defaults(EVAL_OPTIONS))
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
    from ssrl.config import describe

    flags = [i for i, a in enumerate(args) if a == "--describe" or a.startswith("--describe=")]
    if flags:
        i = flags[0]
        key = args[i].partition("=")[2] or (args[i + 1] if i + 1 < len(args) else "")
        if not key:
            raise ConfigError("ssrl config --describe needs a key, e.g. --describe agent.lr")
        rest = args[:i] + args[i + (1 if "=" in args[i] else 2):]
        print(describe.describe(config_lib.apply_overrides(config_lib.TrainConfig(), rest), key), end="")
        return 0
    print(describe.commented_yaml(config_lib.parse_overrides(args)), end="")
    return 0


def tasks(args: list[str]) -> int:
    from ssrl.envs import list_tasks

    options(args, {})
    print("\n".join(list_tasks()))
    return 0


def collect(args: list[str]) -> int:
    from ssrl.experiments.collect import collect as run

    opts = options(args, defaults(COLLECT_OPTIONS))
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
        opts = options(args[1:], defaults(EXPORT_OPTIONS))
        if not opts["run_dir"] or not opts["out"]:
            raise ConfigError("ssrl data export needs run_dir=<run> and out=<dir>")
        _print(export_run(opts["run_dir"], opts["out"]))
        return 0
    if args[:1] == ["merge"]:
        sources = [a for a in args[1:] if "=" not in a]
        opts = options([a for a in args[1:] if "=" in a], defaults(MERGE_OPTIONS))
        if len(sources) < 2 or not opts["out"]:
            raise ConfigError("ssrl data merge needs two or more dataset directories and out=<dir>")
        _print(dataset.merge(sources, opts["out"], [k for k in opts["keys"].split(",") if k]))
        return 0
    raise ConfigError(f"usage: {HELP['data'][0]}")


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


# ---------------------------------------------------------------------------------------------------- help
# The key=value options of the commands that do not take a config dataclass: {key: (default, description)}.
EVAL_OPTIONS = {
    "run_dir": ("", "the training run to evaluate (required)"),
    "episodes": ("10", "deterministic-policy episodes"),
    "video": ("false", "true: write RUN_DIR/eval.mp4; a path ending in .mp4: write the video there"),
    "device": ("auto", "auto (cuda if available), cpu, cuda"),
}
COLLECT_OPTIONS = {
    "env": ("", "the task (required unless policy=checkpoint:RUN_DIR, which gives the run's task)"),
    "policy": ("random", "random, scripted (MetaWorld experts) or checkpoint:RUN_DIR (a trained run's policy)"),
    "frames": ("10000", "environment frames to record (action repeat included)"),
    "out": ("", "the dataset directory to write (required)"),
    "size": ("84", "side of the rendered frames"),
    "frame_stack": ("3", "frames per stacked observation (the dataset stores each frame once)"),
    "action_repeat": ("0", "0: the task's default"),
    "render": ("fast", "fast or dmc (dm_control's look)"),
    "seed": ("0", "seeds the env and the policy"),
    "progress": ("true", "show the progress bar"),
}
EXPORT_OPTIONS = {"run_dir": ("", "the training run whose replay to export (required)"),
                  "out": ("", "the dataset directory to write (required)")}
MERGE_OPTIONS = {"out": ("", "the dataset directory to write (required)"),
                 "keys": ("", "observation entries to keep, comma-separated (Dict observations whose other entries "
                              "differ, e.g. pixels,state of MetaWorld tasks); default every entry")}
HELP = {  # command: (usage, what it does)
    "train": ("ssrl train [key=value ...]", "Train (or resume) a run. Comma lists (a,b) and seeds=N/suite=NAME/jobs=N "
              "run a grid of runs (multirun). `agent=NAME` or `representation=NAME` before --help shows that "
              "group's keys."),
    "ppo": ("ssrl ppo [key=value ...]", "Short for `ssrl train agent=ppo obs=state ...` (PPO on batched envs)."),
    "config": ("ssrl config [key=value ...] [--describe KEY]", "Print the resolved config as YAML, each key with "
               "its description; --describe KEY: its type, default, description and allowed values."),
    "eval": ("ssrl eval run_dir=RUN_DIR [key=value ...]", "Evaluate a training run's last checkpoint."),
    "tasks": ("ssrl tasks", "List the environment ids."),
    "collect": ("ssrl collect env=ID out=DIR [key=value ...]", "Record reward-free episodes as a dataset."),
    "data": ("ssrl data info DIR | ssrl data export run_dir=RUN_DIR out=DIR | ssrl data merge DIR DIR... out=DIR",
             "Describe a dataset, export a training run's replay as one, or merge datasets into one."),
    "pretrain": ("ssrl pretrain data=DIR out=DIR [key=value ...]",
                 "Pretrain a pixel encoder on a dataset with a self-supervised objective."),
    "transfer": ("ssrl transfer backbone=PATH|scratch|random [key=value ...]",
                 "Behaviour cloning from scripted demos on a backbone's features; success rates with 95% CIs."),
}


def defaults(table: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {key: default for key, (default, _) in table.items()}


def _options_help(table: dict[str, tuple[str, str]]) -> str:
    shown = {k: (d or '""', doc) for k, (d, doc) in table.items()}
    width, vwidth = max(map(len, shown)) + 2, max(len(d) for d, _ in shown.values()) + 2
    return "".join(f"  {k:<{width}}{d:<{vwidth}}{doc}\n" for k, (d, doc) in shown.items())


def command_help(command: str, args: list[str]) -> int:
    """Print ``ssrl <command> --help``: usage, what it does and every key with its default and description
    (the config commands read them from the config's own field docs; see :mod:`ssrl.config.describe`)."""
    from ssrl.config import describe

    usage, what = HELP.get(command, (f"ssrl {command}", ""))
    head = f"usage: {usage}\n\n{textwrap.fill(what, 110)}\n"
    try:
        if command in ("train", "ppo", "config"):
            from ssrl.experiments.multirun import MULTIRUN_KEYS

            args = (["agent=ppo", "obs=state"] if command == "ppo" else []) + args
            single = [a for a in args if a.partition("=")[0] not in MULTIRUN_KEYS and "," not in a.partition("=")[2]]
            body = describe.help_text(config_lib.apply_overrides(config_lib.TrainConfig(), single))
            if command != "config":
                body += ("\nmultirun (grids):\n  seeds=N     seeds 0..N-1\n  jobs=N      runs at a time (default: CPU "
                         "count)\n  suite=NAME  a benchmark's tasks and action repeats (dmc100k, dmc500k, dmc-hard or "
                         "a YAML file)\n")
        elif command == "pretrain":
            from ssrl.experiments.pretrain import PretrainConfig

            body = describe.help_text(config_lib.apply_overrides(PretrainConfig(), args),
                                      {"augmentation": ("shift", "none")})
        elif command == "transfer":
            from ssrl.experiments.transfer import SUITES, TransferConfig

            body = describe.help_text(config_lib.apply_overrides(TransferConfig(), args),
                                      {"augmentation": ("shift", "none"), "suite": tuple(SUITES)})
        elif command == "eval":
            body = _options_help(EVAL_OPTIONS)
        elif command == "collect":
            body = _options_help(COLLECT_OPTIONS)
        elif command == "data":
            body = "data export:\n" + _options_help(EXPORT_OPTIONS) + "data merge:\n" + _options_help(MERGE_OPTIONS)
        else:
            body = ""
    except ConfigError as e:
        print(f"ssrl {command}: error: {e}", file=sys.stderr)
        return 2
    print(head + ("\n" + body if body else ""), end="")
    return 0


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
            return command_help(command, [a for a in args if a not in ("-h", "--help")])
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
