"""Masked modelling before/after on bench_representations' quick probe: run once per source tree, side by side.

    PYTHONPATH=<tree> python benchmarks/masked_before_after.py --label old|new [--k 4] [--set key=value ...] [--seeds 3]

The quick probe setting of bench_representations.py (dmc/cartpole-swingup, 10 random-policy episodes at 32x32,
8-filter 2-layer encoder, batch 32, 1500 updates, episode-wise 5-fold ridge probe), for `masked` only, plus
its pretraining-step cost at 64x64 next to curl's (16 filters, batch 64) in the same process. Appends a row to
benchmarks/results/masked_before_after.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import ssrl
from ssrl.agents import make_agent
from ssrl.config import parse_overrides
from ssrl.eval.probe import collect, pretrain, probe_r2

RESULTS = Path(__file__).parent / "results" / "masked_before_after.json"


def step_cost(extra: list[str], rounds: int = 3) -> dict[str, float]:
    """Median seconds per pretraining step, masked vs curl, on random 64x64 sequences."""
    data = collect("dmc/cartpole-swingup", 2, size=64)
    agents = {}
    for name in ("curl", "masked"):
        cfg = parse_overrides(["agent.batch_size=64", f"representation={name}", "encoder.num_filters=16",
                               *(extra if name == "masked" else [])])
        torch.manual_seed(0)
        agents[name] = make_agent(cfg, data.observation_space, data.action_space, torch.device("cpu"))
        pretrain(agents[name], data.replay, 2)
    times: dict[str, list[float]] = {name: [] for name in agents}
    for _ in range(rounds):
        for name, agent in agents.items():
            start = time.perf_counter()
            pretrain(agent, data.replay, 5)
            times[name].append((time.perf_counter() - start) / 5)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True)
    parser.add_argument("--k", type=int, default=0, help="representation.k (0: the tree's default)")
    parser.add_argument("--set", nargs="*", default=[], help="more representation keys, e.g. mask_space=latent")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = [f"representation.k={args.k}"] if args.k else []
    extra += [f"representation.{kv}" for kv in args.set]
    data = collect("dmc/cartpole-swingup", 10, size=32, seed=0)
    probes = []
    for seed in range(args.seeds):
        cfg = parse_overrides(["agent.hidden_dim=32", "agent.batch_size=32", "encoder.num_filters=8",
                               "encoder.num_layers=2", "representation=masked", *extra])
        torch.manual_seed(seed)
        data.replay.seed(seed)
        agent = make_agent(cfg, data.observation_space, data.action_space, torch.device("cpu"))
        random_r2 = probe_r2(agent.encoder, agent.augment, data, folds=5)
        pretrain(agent, data.replay, args.updates)
        probes.append({"seed": seed, "random_r2": random_r2, "trained_r2": probe_r2(agent.encoder, agent.augment,
                                                                                     data, folds=5)})
    cost = step_cost(extra)
    row = {"label": args.label, "source": str(Path(ssrl.__file__).parent), "k": args.k or "default", "set": args.set,
           "probe": probes, "trained_r2_mean": float(np.mean([p["trained_r2"] for p in probes])),
           "random_r2_mean": float(np.mean([p["random_r2"] for p in probes])),
           "step_seconds": cost, "x_curl": cost["masked"] / cost["curl"]}
    rows = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    RESULTS.write_text(json.dumps({"rows": [*rows, row]}, indent=1) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
