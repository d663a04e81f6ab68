"""ssrl against Stable-Baselines3: SAC and PPO on the same ssrl state env, same frames, same evaluation.

    python benchmarks/parity_sb3.py TASK --frames N --seeds S [--algos sac,ppo] [--out DIR]

For each seed and algorithm, trains
- ``ssrl-sac``: ``ssrl train obs=state agent=sac representation=none agent.hidden_dim=256 agent.batch_size=256``
  (SB3's default width and batch; the rest ssrl's defaults: CURL's SAC settings),
- ``sb3-sac``: ``stable_baselines3.SAC("MlpPolicy")`` with SB3's defaults on ``ssrl.envs.make(TASK, obs="state")``,
- ``ssrl-ppo``: ``ssrl train agent=ppo obs=state`` with its defaults (64 batched CPU envs, ``ssrl.envs.make_batched``),
- ``sb3-ppo``: ``stable_baselines3.PPO("MlpPolicy")`` with SB3's defaults on one ssrl env behind ``VecNormalize``
  (observations and rewards normalised, as ssrl's PPO does and as RL Zoo does for MuJoCo),
- ``ssrl-ppo-sb3hp`` (``--algos ppo-sb3hp``): ssrl's PPO with SB3's PPO settings (:data:`SSRL_PPO_SB3HP`: one env,
  2,048-step rollouts, 10 epochs of 64-sample minibatches, lr 3e-4 constant, 64-unit networks, initial log-std 0),
  which separates the implementation from the defaults (ssrl's are Brax-like, for many envs: 64 envs, 4 epochs
  of 8 minibatches, i.e. 10x fewer gradient steps per frame than SB3's),

each for ``--frames`` environment frames (action repeat included: the task's default repeat), one torch thread.
Every final policy is scored the same way: 10 deterministic episodes on a fresh ``ssrl.envs.make(TASK,
obs="state")`` seeded 10,000 + i (``ssrl.runtime.evaluate.evaluate``). Prints a table (mean ± std over seeds of the
per-seed mean return) and writes ``DIR/parity_sb3-<task>-<algos>-<frames>.json`` after every run, so an
interrupted benchmark keeps what it measured. ssrl runs live in ``runs/parity_sb3/`` and resume if interrupted.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
EVAL_EPISODES, EVAL_SEED = 10, 10_000
SSRL_SAC = ["agent=sac", "representation=none", "agent.hidden_dim=256", "agent.batch_size=256"]
SSRL_PPO_SB3HP = ["agent=ppo", "num_envs=1", "agent.num_steps=2048", "agent.epochs=10", "agent.minibatches=32",
                  "agent.lr=3e-4", "agent.anneal_lr=false", "agent.hidden_dim=64", "agent.init_log_std=0"]


class SB3Actor:
    """An SB3 model behind ssrl's evaluation interface (``act``, ``train``); ``normalize`` maps raw observations
    to the model's inputs (a ``VecNormalize``'s frozen statistics for PPO)."""

    def __init__(self, model, normalize=None) -> None:
        self.model, self.normalize = model, normalize

    def train(self, mode: bool = True) -> None:
        pass

    def act(self, obs: np.ndarray, frame: int, eval_mode: bool) -> np.ndarray:
        x = obs if self.normalize is None else self.normalize(obs)
        return self.model.predict(x, deterministic=True)[0]


def score(actor, task: str) -> list[float]:
    """The protocol every algorithm gets: 10 deterministic episodes on a fresh ssrl state env."""
    from ssrl.envs import make
    from ssrl.runtime.evaluate import evaluate

    env = make(task, obs="state", seed=EVAL_SEED)
    try:
        return evaluate(actor, env, EVAL_EPISODES, EVAL_SEED, 0)
    finally:
        env.close()


def train_ssrl(task: str, algo: str, frames: int, seed: int) -> tuple[list[float], float]:
    run_dir = Path("runs") / "parity_sb3" / task.replace("/", "-") / f"ssrl-{algo}" / f"seed{seed}"
    args = {"sac": SSRL_SAC, "ppo": ["agent=ppo"], "ppo-sb3hp": SSRL_PPO_SB3HP}[algo] + [
        f"env={task}", "obs=state", f"frames={frames}", f"seed={seed}", f"eval_every={frames}", "threads=1",
        "progress=false", f"run_dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ssrl", "train", *args], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if algo == "sac":
        from ssrl.experiments.offpolicy import load_run

        _, agent, env = load_run(run_dir, device="cpu")
    else:
        from ssrl.experiments.onpolicy import load_policy

        _, agent, env = load_policy(run_dir, device="cpu")
    env.close()
    return score(agent, task), wall


def train_sb3(task: str, algo: str, frames: int, seed: int) -> tuple[list[float], float]:
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from ssrl.envs import default_action_repeat, make

    steps = frames // default_action_repeat(task)
    start = time.perf_counter()
    if algo == "sac":
        model = SAC("MlpPolicy", make(task, obs="state", seed=seed), seed=seed, device="cpu")
        model.learn(total_timesteps=steps)
        actor = SB3Actor(model)
    else:
        venv = VecNormalize(DummyVecEnv([lambda: make(task, obs="state", seed=seed)]))
        model = PPO("MlpPolicy", venv, seed=seed, device="cpu")
        model.learn(total_timesteps=steps)
        venv.training = False
        actor = SB3Actor(model, venv.normalize_obs)
    return score(actor, task), time.perf_counter() - start


def table(results: dict[str, list[dict]], task: str, frames: int) -> str:
    lines = [f"{task}, {frames:,} frames: final return, {EVAL_EPISODES} deterministic episodes per seed",
             "| algorithm | seeds | return (mean ± std over seeds) | per seed | train wall s (mean) |",
             "|---|---:|---:|---|---:|"]
    for name, runs in results.items():
        means = [float(np.mean(r["returns"])) for r in runs]
        lines.append(f"| {name} | {len(runs)} | {np.mean(means):.1f} ± {np.std(means):.1f} | "
                     f"{', '.join(f'{m:.0f}' for m in means)} | {np.mean([r['wall_s'] for r in runs]):.0f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="an ssrl env id, e.g. dmc/cartpole-swingup")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--algos", default="sac,ppo", help="comma list of sac, ppo, ppo-sb3hp (ssrl only)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    ns = parser.parse_args(argv)
    algos = ns.algos.split(",")
    torch.set_num_threads(1)
    out = ns.out / f"parity_sb3-{ns.task.replace('/', '-')}-{'-'.join(algos)}-{ns.frames}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for algo in algos:
        for lib, train in (("ssrl", train_ssrl), ("sb3", train_sb3))[:1 if algo == "ppo-sb3hp" else 2]:
            for seed in range(ns.seeds):
                returns, wall = train(ns.task, algo, ns.frames, seed)
                results.setdefault(f"{lib}-{algo}", []).append({"seed": seed, "returns": returns, "wall_s": wall})
                print(f"{lib}-{algo} seed {seed}: {np.mean(returns):.1f} ({wall:.0f} s)", flush=True)
                out.write_text(json.dumps({"task": ns.task, "frames": ns.frames, "host": platform.node(),
                                           "eval": {"episodes": EVAL_EPISODES, "seed": EVAL_SEED},
                                           "ssrl_sac_overrides": SSRL_SAC,
                                           "ssrl_ppo_sb3hp_overrides": SSRL_PPO_SB3HP, "results": results}, indent=2))
    print(table(results, ns.task, ns.frames))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
