"""Held-out transfer, the R3M protocol at CPU scale: pretrain on MetaWorld tasks, behaviour-clone tasks never seen.

    python benchmarks/transfer_heldout.py [--stage screen|final|all] [--seeds 3]

1. Pretraining data: `ssrl collect` scripted-expert and random-policy frames of every --pretrain-tasks task
   (--frames each), merged into one dataset with `ssrl data merge`.
2. `ssrl pretrain` every --objectives objective on it (--steps, batch --batch-size, --size px, one backbone each).
3. screen: `ssrl transfer` on every --heldout task (none of them in the pretraining set) with 10 demos,
   --seeds BC seeds and 25 rollouts each, for every objective frozen, a frozen random encoder and scratch (the
   same encoder trained end to end).
4. final: the objective with the best screened mean success, frozen and fine-tuned, vs random and scratch at 5
   and 25 demos with 50 rollouts.
5. probe (why a backbone pays or not; its own stage, --probe-out): held-out R^2 of linear and MLP probes from each
   frozen backbone's features (eval view, as the BC head sees them) to the object position (MetaWorld state 4-6,
   what the BC head does not get as proprioception) and the hand position (0-2) on the held-out tasks'
   demonstrations, all tasks pooled, even demos fit, odd demos scored; random encoders of the BC seeds as control.
Frozen backbones train the BC head on cached features (ssrl transfer's feature_views), so rollouts and the
end-to-end rows set the cost. Rows go to benchmarks/results/transfer_heldout.json as each backbone finishes:
{"rows": [{"backbone", "objective", "mode", "task", "held_out", "demos", "seed", "rollouts", "success"}, ...]};
work files (datasets, backbones, demos) to --work, reused by a rerun. Each (mode, objective) runs `ssrl transfer`
in its own out (--work/bc/<mode>-<objective>, which keeps each finished task's row for a rerun), all of them on
the demonstrations in --work/transfer/demos, so stages in separate processes never share an out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_representations import OBJECTIVES
from rich.console import Console
from rich.table import Table

from ssrl.data.dataset import info, merge
from ssrl.eval.probe import from_dataset
from ssrl.experiments import transfer
from ssrl.experiments.collect import collect
from ssrl.experiments.pretrain import Pretrainer, parse

RESULTS = Path(__file__).parent / "results" / "transfer_heldout.json"
PROBE_RESULTS = Path(__file__).parent / "results" / "transfer_heldout_probe.json"
PROBED = {"object xyz": [4, 5, 6], "hand xyz": [0, 1, 2]}  # entries of MetaWorld's 39-entry state
PRETRAIN_TASKS = "reach-v3,push-v3,pick-place-v3,plate-slide-v3,coffee-button-v3,handle-press-v3,lever-pull-v3," \
                 "faucet-open-v3"
HELDOUT_TASKS = "door-open-v3,drawer-open-v3,drawer-close-v3,button-press-topdown-v3,window-open-v3"


def pretraining_data(args: argparse.Namespace, work: Path) -> Path:
    """Scripted and random frames of every pretraining task, merged (made once)."""
    merged = work / "pretrain-data"
    if (merged / "dataset.json").exists():
        return merged
    parts = []
    for i, task in enumerate(args.pretrain_tasks.split(",")):
        for policy in ("scripted", "random"):
            part = work / "collect" / f"{task}-{policy}"
            if not (part / "dataset.json").exists():  # (an interrupted collect leaves `part` empty)
                collect(f"mw/{task}", policy, args.frames, part, size=args.size, frame_stack=1, seed=i,
                        progress=False)
            parts.append(part)
    merge(parts, merged, keys=["pixels", "state"])  # physics_state sizes differ between tasks
    return merged


def backbones(args: argparse.Namespace, work: Path, data: Path) -> dict[str, Path]:
    """One pretrained backbone per objective (resumed or reused by a rerun)."""
    out = {}
    for objective in args.objectives.split(","):
        out[objective] = work / "backbones" / objective
        if not (out[objective] / "backbone.safetensors").exists():
            Pretrainer(parse([*(OBJECTIVES.get(objective) or [f"representation={objective}"]), f"data={data}",
                              f"out={out[objective]}", f"steps={args.steps}", f"batch_size={args.batch_size}",
                              f"threads={args.threads}", "progress=false"])).run()
    return out


def expand(rows: list[dict], objective: str, mode: str, held_out: set[str]) -> list[dict]:
    """``ssrl transfer``'s rows (one per task and demo count) as one row per seed."""
    return [{"backbone": row["backbone"], "objective": objective, "mode": mode, "task": row["task"],
             "held_out": row["task"] in held_out, "demos": row["demos"], "seed": seed,
             "rollouts": row["rollouts"] // row["seeds"], "success": success}
            for row in rows for seed, success in enumerate(row["seed_success"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("screen", "final", "all", "probe"), default="all")
    parser.add_argument("--pretrain-tasks", default=PRETRAIN_TASKS)
    parser.add_argument("--heldout", default=HELDOUT_TASKS)
    parser.add_argument("--objectives", default="curl,spr,masked,world_model")
    parser.add_argument("--frames", type=int, default=2500, help="frames per pretraining task and policy")
    parser.add_argument("--steps", type=int, default=1500, help="pretraining steps")
    parser.add_argument("--batch-size", type=int, default=64, help="pretraining and BC batch size")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3, help="BC seeds per task and demo count")
    parser.add_argument("--bc-steps", type=int, default=1000)
    parser.add_argument("--horizon", type=int, default=150)
    parser.add_argument("--screen-rollouts", type=int, default=25)
    parser.add_argument("--screen-modes", default="random,frozen,scratch",
                        help="the screen's rows (e.g. frozen: only the --objectives backbones, to redo one)")
    parser.add_argument("--final-rollouts", type=int, default=50)
    parser.add_argument("--final-demos", default="5,25")
    parser.add_argument("--best", default="", help="the final stage's objective (default: the best screened one "
                                                   "in --out)")
    parser.add_argument("--finetune-lr-scale", type=float, default=0.1,
                        help="fine-tuned rows train the backbone at this times the BC head's lr (ssrl transfer's "
                        "encoder_lr_scale; 1: the pretrained weights only initialise the encoder scratch trains)")
    parser.add_argument("--final-modes", default="scratch,random,frozen,finetuned",
                        help="the final stage's rows (scratch and random need no backbone: a second process can run "
                             "them beside a screen, with its own --out)")
    parser.add_argument("--readout", default="features", choices=transfer.READOUTS,
                        help="what the BC head reads (ssrl transfer's readout): the backbone's features, or keypoints "
                             "/ a fresh projection of its conv maps trained with the head")
    parser.add_argument("--in-domain", action="store_true",
                        help="diagnostic: --pretrain-tasks may include held-out tasks (rows of those are held_out false)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--work", default="runs/bench-transfer-heldout")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--probe-out", default=str(PROBE_RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console, t0, work = Console(width=200), time.perf_counter(), Path(args.work)
    held_out = set(args.heldout.split(","))
    if args.in_domain:
        held_out -= set(args.pretrain_tasks.split(","))
    assert not held_out & set(args.pretrain_tasks.split(",")), "a held-out task is in the pretraining set"
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {"rows": []}
    rows, done = result["rows"], {(r["backbone"], r["demos"]) for r in result["rows"]}

    modes = args.final_modes.split(",")
    pretrained = (args.stage in ("screen", "all") and "frozen" in args.screen_modes.split(",")) or \
        (args.stage in ("final", "all") and bool({"frozen", "finetuned"} & set(modes)))
    if pretrained:
        data = pretraining_data(args, work)
        console.print(f"pretraining data: {info(data)['transitions']:,} transitions of {info(data)['tasks']}")
        nets = backbones(args, work, data)
    else:  # the backbones made so far (a screen may be running beside this process); scratch and random need none
        nets = {o: work / "backbones" / o for o in args.objectives.split(",")
                if (work / "backbones" / o / "backbone.safetensors").exists()}
    base = transfer.parse([f"tasks={args.heldout}", f"steps={args.bc_steps}", f"batch_size={args.batch_size}",
                           f"size={args.size}", f"horizon={args.horizon}", f"seeds={args.seeds}", "frame_stack=1",
                           f"demos_dir={work / 'transfer' / 'demos'}", f"threads={args.threads}", "progress=false",
                           f"readout={args.readout}"])

    def evaluate(name: str, objective: str, mode: str, demos: str, rollouts: int) -> None:
        backbone = name if mode in ("scratch", "random") else str(nets[objective])
        scale = args.finetune_lr_scale if mode == "finetuned" else base.encoder_lr_scale
        suffix = f"-lr{scale:g}" if scale != base.encoder_lr_scale else ""
        suffix += "" if args.readout == "features" else f"-{args.readout}"
        cfg = replace(base, backbone=backbone, freeze=mode != "finetuned", demos=demos, rollouts=rollouts,
                      encoder_lr_scale=scale, out=str(work / "bc" / f"{mode}-{objective}{suffix}"))
        label = f"{cfg.label()} x{rollouts}"
        if all((label, int(n)) in done for n in demos.split(",")):
            return
        new = expand(transfer.run(cfg), objective, mode, held_out)
        for row in new:
            row["backbone"], row["readout"] = label, args.readout
        rows.extend(new)
        done.update((label, int(n)) for n in demos.split(","))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "torch": torch.__version__,
                                   "seconds": round(time.perf_counter() - t0), "rows": rows}, indent=1) + "\n")

    if args.stage == "probe":
        return probe(args, base, nets, console)
    if args.stage in ("screen", "all"):
        screen = args.screen_modes.split(",")
        if "random" in screen:
            evaluate("random", "none", "random", "10", args.screen_rollouts)
        for objective in nets if "frozen" in screen else ():  # frozen rows first: cheap, and they pick the final
            evaluate(objective, objective, "frozen", "10", args.screen_rollouts)
        if "scratch" in screen:
            evaluate("scratch", "none", "scratch", "10", args.screen_rollouts)
    if args.stage in ("final", "all"):
        screened = [r for r in rows if r["demos"] == 10 and r["mode"] == "frozen"]
        best = args.best or max(nets, key=lambda o: np.mean([r["success"] for r in screened if r["objective"] == o]
                                                           or [-1]), default="none")
        console.print(f"best screened objective: {best}")
        for mode in modes:
            evaluate(mode, best if mode in ("frozen", "finetuned") else "none", mode, args.final_demos,
                     args.final_rollouts)
    table(console, rows)
    console.print(f"wrote {out} ({(time.perf_counter() - t0) / 60:.0f} min)")


def probe(args: argparse.Namespace, base: transfer.TransferConfig, nets: dict[str, Path], console: Console) -> None:
    """Stage 5 (module docstring): rows {"backbone", "objective", "seed", "target", "linear_r2", "mlp_r2"} to
    --probe-out."""
    from ssrl.eval.probe import features, probe_scores
    from ssrl.nn.augment import Augment

    screened = replace(base, demos="10")  # the screen's demonstrations (recorded by it, or here)
    demos = [from_dataset(str(transfer.demonstrations(screened, task, 10))) for task in args.heldout.split(",")]
    obs = np.concatenate([d.obs for d in demos])
    states = np.concatenate([d.states for d in demos])
    episodes = np.concatenate([d.episodes + 1000 * i for i, d in enumerate(demos)])
    test = episodes % 2 == 1
    augment = Augment(base.augmentation, demos[0].observation_space)
    backbones = [(f"random-seed{seed}", "random", "random", seed) for seed in range(args.seeds)]
    backbones += [(str(path), str(path), objective, 0) for objective, path in nets.items()]
    rows = []
    for name, backbone, objective, seed in backbones:
        torch.manual_seed(seed)
        net = transfer.make_backbone(replace(base, backbone=backbone), demos[0].observation_space)
        x = features(net, augment, obs)
        for target, dims in PROBED.items():
            scores = probe_scores(x, states[:, dims], test, np.ones(len(dims), bool))
            rows.append({"backbone": name, "objective": objective, "seed": seed, "target": target,
                         "linear_r2": scores["linear_r2_all"], "mlp_r2": scores["mlp_r2_all"],
                         "linear_r2_dims": scores["linear_r2_dims"]})
            console.print(json.dumps(rows[-1]))
    Path(args.probe_out).write_text(json.dumps({"args": vars(args), "frames": len(obs), "rows": rows}, indent=1) + "\n")
    view = Table(title=f"held-out demonstrations ({len(obs):,} frames): probe R^2 from frozen features")
    for column in ("objective", "target", "linear R^2", "MLP R^2"):
        view.add_column(column, justify="left" if column in ("objective", "target") else "right")
    for objective in dict.fromkeys(r["objective"] for r in rows):
        for target in PROBED:
            group = [r for r in rows if r["objective"] == objective and r["target"] == target]
            view.add_row(objective, target, *(f"{np.mean([r[k] for r in group]):.3f}" for k in ("linear_r2", "mlp_r2")))
    console.print(view)


def table(console: Console, rows: list[dict]) -> None:
    """Mean success over tasks and seeds (+- std over seeds of the task mean) per backbone, demos and whether the
    tasks were held out of pretraining (``--in-domain`` rows are not)."""
    view = Table(title="MetaWorld tasks: BC success")
    for column in ("backbone", "mode", "demos", "tasks", "mean success", "std over seeds", "per task"):
        view.add_column(column, justify="left" if column in ("backbone", "mode", "tasks", "per task") else "right")
    for backbone, demos, held in dict.fromkeys((r["backbone"], r["demos"], r["held_out"]) for r in rows):
        group = [r for r in rows if (r["backbone"], r["demos"], r["held_out"]) == (backbone, demos, held)]
        seeds = sorted({r["seed"] for r in group})
        per_seed = [np.mean([r["success"] for r in group if r["seed"] == s]) for s in seeds]
        tasks = dict.fromkeys(r["task"] for r in group)
        per_task = " ".join(f"{t.removesuffix('-v3')} {np.mean([r['success'] for r in group if r['task'] == t]):.2f}"
                            for t in tasks)
        view.add_row(backbone, group[0]["mode"], str(demos), "held out" if held else "in pretraining",
                     f"{np.mean(per_seed):.3f}", f"{np.std(per_seed):.3f}", per_task)
    console.print(view)


if __name__ == "__main__":
    main()
