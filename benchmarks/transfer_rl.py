"""RL transfer on DMC, URLB-style at CPU scale: a backbone pretrained reward-free on one domain, then pixel SAC on
tasks of that domain with the backbone frozen or fine-tuned, vs the same encoder trained from scratch.

    python benchmarks/transfer_rl.py --backbone runs/bench-probe/cartpole-swingup/backbones/curl-seed0 \
        [--tasks dmc/cartpole-swingup,dmc/cartpole-balance] [--frames 20000] [--seeds 3]

The backbone's card sets the pixels (size, frame stack) and the scratch encoder copies its architecture, so the
three modes differ only in where the encoder starts and whether it trains. Runs alternate by seed (scratch,
frozen, fine-tuned) so their frames/s are measured side by side. Every run is `ssrl train` (work in --work,
resumed by a rerun); rows -> benchmarks/results/transfer_rl.json:
{"rows": [{"task", "mode", "seed", "frames", "final_return", "frames_per_s"}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ssrl.cli import main as ssrl

RESULTS = Path(__file__).parent / "results" / "transfer_rl.json"


def run(args: argparse.Namespace, task: str, mode: str, seed: int, card: dict) -> dict:
    run_dir = Path(args.work) / task.split("/")[1] / f"{mode}-seed{seed}"
    spec = card["args"]  # a pixel_encoder card
    encoder = {"scratch": [f"encoder.num_filters={spec['num_filters']}", f"encoder.num_layers={spec['num_layers']}",
                           f"encoder.feature_dim={spec['feature_dim']}"],
               "frozen": [f"encoder=pretrained:{args.backbone}", "encoder.freeze=true"],
               "finetuned": [f"encoder=pretrained:{args.backbone}", "encoder.freeze=false"]}[mode]
    meta = run_dir / "meta.json"
    if not meta.exists() or json.loads(meta.read_text())["status"] != "finished":
        assert ssrl(["train", f"env={task}", "agent=sac", f"frames={args.frames}", f"seed={seed}",
                     f"size={card['input']['size']}", f"frame_stack={card['input']['frame_stack']}",
                     f"eval_every={args.frames // 4}", f"eval_episodes={args.eval_episodes}", f"run_dir={run_dir}", f"threads={args.threads}",
                     "progress=false", *args.agent.split(), *encoder]) == 0
    evals = np.genfromtxt(run_dir / "eval.csv", delimiter=",", names=True)
    return {"task": task, "mode": mode, "seed": seed, "frames": args.frames, "agent": args.agent,
            "final_return": float(evals["episode_reward"][-1]),
            "frames_per_s": json.loads(meta.read_text())["frames_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", required=True, help="a backbone directory (ssrl pretrain's out)")
    parser.add_argument("--tasks", default="dmc/cartpole-swingup,dmc/cartpole-balance")
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--agent", default="agent.batch_size=128 agent.hidden_dim=256",
                        help="overrides shared by the three modes (CPU-sized SAC by default)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--work", default="runs/bench-transfer-rl")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    card = json.loads((Path(args.backbone) / "backbone.json").read_text())
    t0, rows = time.perf_counter(), []
    for task in args.tasks.split(","):
        for seed in range(args.seeds):
            for mode in ("scratch", "frozen", "finetuned"):
                rows.append(run(args, task, mode, seed, card))
                print(json.dumps(rows[-1]), flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(),
                                                      "backbone_card": card, "seconds": round(time.perf_counter() - t0),
                                                      "rows": rows}, indent=1) + "\n")
    table = Table(title=f"pixel SAC on {args.frames:,} frames, backbone {args.backbone}, mean +- std over seeds")
    for column in ("task", "mode", "seeds", "final return", "frames/s", "x scratch frames/s"):
        table.add_column(column, justify="left" if column in ("task", "mode") else "right")
    for task in args.tasks.split(","):
        scratch_fps = np.mean([r["frames_per_s"] for r in rows if r["task"] == task and r["mode"] == "scratch"])
        for mode in ("scratch", "frozen", "finetuned"):
            group = [r for r in rows if r["task"] == task and r["mode"] == mode]
            returns, fps = [r["final_return"] for r in group], [r["frames_per_s"] for r in group]
            table.add_row(task, mode, str(len(group)), f"{np.mean(returns):.0f} +- {np.std(returns):.0f}",
                          f"{np.mean(fps):.1f}", f"{np.mean(fps) / scratch_fps:.2f}")
    Console(width=200).print(table)
    print(f"wrote {args.out} ({(time.perf_counter() - t0) / 60:.0f} min)")


if __name__ == "__main__":
    main()
