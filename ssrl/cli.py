"""The ``ssrl`` command line: ``ssrl train key=value ...``, ``ssrl eval run_dir=...``, ``ssrl config``,
``ssrl tasks``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ssrl import config as config_lib
from ssrl.commands import COMMANDS, options
from ssrl.commands import USAGE as COMMANDS_USAGE
from ssrl.errors import BackboneError, CheckpointError, ConfigError, DatasetError

USAGE = """ssrl <command> [key=value ...]

commands:
  train   train an agent:   ssrl train env=dmc/cheetah-run agent=sac representation=none frames=100000 seed=0
  eval    evaluate a run:   ssrl eval run_dir=runs/x episodes=10 video=true
  train agent=ppo obs=state: PPO on batched envs (num_envs=4096 device=cuda on a GPU, num_envs=32 device=cpu)
  train agent=sac obs=state num_envs=32: SAC/DrQ-v2 on batched envs with a replay on the training device
  ppo     short for `ssrl train agent=ppo obs=state ...`
  config  print the resolved config for the given overrides (all keys, defaults included)
  tasks   list environment ids
  sweep   hyperparameter sweep:  ssrl sweep SPEC.yaml [--address RAY_ADDRESS] [--export wandb]
  report  aggregate results:     ssrl report RUN_DIRS... --out DIR [--reference DIR]
""" + COMMANDS_USAGE + """
multirun: comma lists expand to a grid, run in parallel (jobs=N) and resumed when rerun:
  ssrl train env=dmc/cheetah-run,dmc/walker-walk representation=none seeds=5 jobs=2
  ssrl train suite=dmc100k seeds=5          (suites: dmc100k, dmc500k, dmc-hard)
"""
# Commands with their own argument parser: name -> module with main(argv) -> exit code.
SUBCOMMANDS = {"sweep": "ssrl.experiments.sweep", "report": "ssrl.experiments.report"}


VIDEO_SIZE = 256


def _eval(args: list[str]) -> int:
    import imageio.v2 as imageio
    import numpy as np

    from ssrl.experiments.onpolicy import is_ppo_run, load_policy
    from ssrl.experiments.offpolicy import load_run
    from ssrl.runtime.evaluate import evaluate

    opts = options("eval", args, {"run_dir": "", "episodes": "10", "video": "false", "device": "auto"})
    if not opts["run_dir"]:
        raise ConfigError("ssrl eval needs run_dir=<path of a training run>")
    run_dir = Path(opts["run_dir"])
    want_video = opts["video"].lower() not in ("false", "0", "no", "")
    load = load_policy if is_ppo_run(run_dir) else load_run  # PPO: its policy in the run's single env
    cfg, agent, env = load(run_dir, opts["device"], render_size=VIDEO_SIZE if want_video else None)
    frames: list[np.ndarray] | None = [] if want_video else None
    returns = evaluate(agent, env, int(opts["episodes"]), cfg.seed + 10_000, 0, frames)
    print(f"{cfg.env}: mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} episodes")
    if frames:
        path = Path(opts["video"]) if opts["video"].endswith(".mp4") else run_dir / "eval.mp4"
        imageio.mimsave(path, frames, fps=30)
        print(f"video: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="ssrl", usage=USAGE, add_help=True)
    parser.add_argument("command", choices=["train", "eval", "ppo", "config", "tasks", *COMMANDS])
    parser.add_argument("overrides", nargs="*")
    ns = parser.parse_args(argv)
    if ns.command == "ppo":
        ns.command, ns.overrides = "train", ["agent=ppo", "obs=state", *ns.overrides]
    try:
        if ns.command == "train":
            from ssrl.experiments import multirun

            if multirun.is_multirun(ns.overrides):
                return multirun.main(ns.overrides)
            cfg = config_lib.parse_overrides(ns.overrides)
            if cfg.experiment and not cfg.run_dir:  # runs/<experiment>/<overrides>, as multirun names them
                cfg.run_dir = str(Path("runs") / cfg.experiment / multirun.run_name(ns.overrides))
            if cfg.agent.name == "ppo":
                from ssrl.experiments.onpolicy import train_ppo

                train_ppo(cfg)
            elif cfg.num_envs > 1:
                from ssrl.experiments.offpolicy import BatchedTrainer

                BatchedTrainer(cfg).train()
            else:
                from ssrl.experiments.offpolicy import Trainer

                Trainer(cfg).train()
        elif ns.command == "config":
            print(yaml.safe_dump(config_lib.to_dict(config_lib.parse_overrides(ns.overrides)), sort_keys=False))
        elif ns.command in COMMANDS:
            return COMMANDS[ns.command](ns.overrides)
        elif ns.command == "tasks":
            from ssrl.envs import list_tasks

            print("\n".join(list_tasks()))
        else:
            return _eval(ns.overrides)
    except (ConfigError, FileNotFoundError, CheckpointError, FloatingPointError, DatasetError, BackboneError,
            ImportError) as e:  # ImportError: an optional extra is missing; the message names it
        print(f"ssrl {ns.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
