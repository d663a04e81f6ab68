"""Representation modules: update cost relative to ``representation=none`` and a linear physics probe.

    python benchmarks/bench_representations.py [--batch 64] [--size 84] [--probe-updates 1500]

1. Update cost: one SAC ``update()`` (critic, actor, representation, targets) on the same batch size and
   pixel size for every module, timed round-robin in one process (median of ``--rounds``), as a ratio to
   ``none``.
2. Probe: random-policy frames of ``--task``; each module's objective alone trains the encoder for
   ``--probe-updates`` updates from the same initialisation; a ridge probe from frozen features to the state
   (positions, angles as cos/sin, velocities) is scored by episode-wise ``--folds``-fold cross-validation
   (R^2 of the out-of-fold predictions of every frame, averaged over state dims), next to the same probe on
   the randomly initialised encoder; both averaged over ``--seeds`` initialisations.
Prints tables and writes benchmarks/results/representations.json.

    python benchmarks/bench_representations.py --full [--domains dmc/cartpole-swingup,dmc/finger-spin] [--seeds 3]

The full table, everything through ssrl's own commands (work files in --work, reused by a rerun):
1. per domain, a state SAC policy (`ssrl train obs=state`, POLICY's settings) and four datasets (`ssrl collect`):
   random-policy and trained-policy frames for pretraining (--pretrain-frames each, merged with
   `ssrl data merge`), and the same two for the probe with other seeds (--probe-frames each: held-out episodes),
2. every objective pretrained alone (`ssrl pretrain`, --steps, batch --batch-size) per seed, plus two controls:
   `random` (the encoder at its initialisation, no training) and `pixel_ae` (a pixel autoencoder: world_model
   with only its decoder loss); and an upper bound, `supervised`: the same encoder trained (--steps x
   --batch-size, shift augmentation, Adam) to regress the standardised state from pixels on the probe's fitting
   episodes - what an encoder of this shape can make readable at these pixels and this data,
3. frozen features of the probe episodes; a ridge and a small MLP probe fitted on the even episodes and scored on
   the odd ones (R^2 of the positions and of the whole state vector, velocities included).
Rows go to benchmarks/results/probe_full.json as they finish; the table shows mean and a 95% t-interval over seeds.
Each row's ``data`` fingerprints the probe set it was scored on: datasets rebuilt on another machine differ (the
policy's training amplifies its arithmetic), so compare rows with the same ``data`` only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ssrl.agents import make_agent
from ssrl.config import parse_overrides
from ssrl.data import ReplayBuffer
from ssrl.eval.probe import collect, features, from_dataset, position_dims, pretrain, probe_r2, probe_scores

RESULTS = Path(__file__).parent / "results" / "representations.json"
FULL_RESULTS = Path(__file__).parent / "results" / "probe_full.json"
MODULES = ["none", "curl", "spr", "masked", "world_model"]
# The full table's rows: ssrl pretrain overrides per objective (random: no training).
OBJECTIVES = {"random": None, "curl": [], "spr": [], "masked": [], "world_model": [],
              "masked_input": ["representation=masked", "representation.mask_space=input", "representation.k=2",
                               "representation.mask_ratio=0.5"],  # masked before latent masking became its default
              "pixel_ae": ["representation=world_model", "representation.k=1", "representation.consistency_coef=0",
                           "representation.reward_coef=0", "representation.variance_coef=0",
                           "representation.covariance_coef=0", "representation.decoder_coef=1"],
              "supervised": None}  # trained on the probe's own fitting episodes (supervised_encoder)
# The trained policy of each domain's data (ssrl train overrides; --policy-frames replaces the frames). finger-spin
# pays only for spinning, which state SAC finds after 20k-60k frames (MR.Q's state curves: 0 at 20k, 300 at 40k,
# 580 at 60k); at 20k frames its policy was a second random one and the spinner hardly moved in the data. A
# 256-unit SAC keeps its 100k frames at about 17 minutes on one thread.
POLICY = {"dmc/cartpole-swingup": {"frames": 20_000},
          "dmc/finger-spin": {"frames": 100_000, "agent.hidden_dim": 256, "agent.batch_size": 256}}


def random_replay(space: gym.spaces.Box, frame_stack: int, episodes: int = 4, length: int = 100) -> ReplayBuffer:
    """A buffer of random uint8 frames (update cost does not depend on the pixels)."""
    actions = gym.spaces.Box(-1, 1, (6,), np.float32)
    replay = ReplayBuffer(space, actions, episodes * (length + 1), frame_stack=frame_stack, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        replay.add_first(rng.integers(0, 256, space.shape, dtype=np.uint8))
        for t in range(length):
            replay.add(rng.uniform(-1, 1, 6).astype(np.float32), float(rng.normal()),
                       rng.integers(0, 256, space.shape, dtype=np.uint8), False, t == length - 1)
    return replay


def update_costs(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per SAC update for each module."""
    space = gym.spaces.Box(0, 255, (9, args.size, args.size), np.uint8)
    replay = random_replay(space, 3)
    agents = {}
    for name in [*MODULES, "masked_input"]:
        cfg = parse_overrides(["agent=sac", f"agent.batch_size={args.batch}", f"encoder.num_filters={args.filters}",
                               *(OBJECTIVES.get(name) or [f"representation={name}"])])
        torch.manual_seed(0)
        agents[name] = make_agent(cfg, space, gym.spaces.Box(-1, 1, (6,), np.float32), torch.device("cpu"))
        agents[name].update(replay, 0)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in agents}
    for _ in range(args.rounds):
        for name, agent in agents.items():
            start = time.perf_counter()
            for _ in range(args.updates):
                agent.update(replay, 0)
            times[name].append((time.perf_counter() - start) / args.updates)
    return {name: statistics.median(t) for name, t in times.items()}


def probe_table(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per module: probe R^2 at init and after pretraining, averaged over ``--seeds`` (initialisation and batch
    order; the random-init baseline uses the same initialisations)."""
    data = collect(args.task, args.episodes, size=args.probe_size, seed=0)
    rows = {}
    for name in MODULES[1:]:
        cfg = parse_overrides(["agent=sac", "agent.hidden_dim=32", "agent.batch_size=32", "encoder.num_filters=8",
                               "encoder.num_layers=2", f"representation={name}"])
        runs = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            data.replay.seed(seed)
            agent = make_agent(cfg, data.observation_space, data.action_space, torch.device("cpu"))
            random_r2 = probe_r2(agent.encoder, agent.augment, data, folds=args.folds)
            start = time.perf_counter()
            losses = pretrain(agent, data.replay, args.probe_updates)
            runs.append({"random_r2": random_r2, "trained_r2": probe_r2(agent.encoder, agent.augment, data,
                                                                        folds=args.folds),
                         "loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:])),
                         "seconds": time.perf_counter() - start})
        rows[name] = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
        rows[name]["gain_min"] = min(run["trained_r2"] - run["random_r2"] for run in runs)
    rows["frames"] = {"count": len(data.obs)}
    return rows


def full_data(args: argparse.Namespace, env_id: str) -> tuple[Path, Path]:
    """The pretraining and probe datasets of one domain (made once, then reused): ``ssrl train`` a state SAC
    policy, ``ssrl collect`` random and policy frames, ``ssrl data merge`` them."""
    from ssrl.cli import main as ssrl
    from ssrl.data.dataset import info

    work = Path(args.work) / env_id.split("/")[1]
    policy = work / "policy"
    if not (policy / "meta.json").exists() or json.loads((policy / "meta.json").read_text())["status"] != "finished":
        settings = POLICY.get(env_id, {"frames": 20_000}) | ({"frames": args.policy_frames} if args.policy_frames else {})
        assert ssrl(["train", f"env={env_id}", "obs=state", "agent=sac", *(f"{k}={v}" for k, v in settings.items()),
                     f"size={args.pixels}", f"eval_every={settings['frames']}", f"run_dir={policy}",
                     f"threads={args.threads}", "progress=false"]) == 0
    out = {}
    for split, frames, seed in (("pretrain", args.pretrain_frames, 0), ("probe", args.probe_frames, 1)):
        parts = []
        for name, spec in (("random", "random"), ("policy", f"checkpoint:{policy}")):
            part = work / f"{split}-{name}"
            if not (part / "dataset.json").exists():  # (an interrupted collect leaves `part` empty)
                assert ssrl(["collect", f"env={env_id}", f"policy={spec}", f"frames={frames}", f"out={part}",
                             f"size={args.pixels}", f"seed={seed}", "progress=false"]) == 0
            parts.append(str(part))
        out[split] = work / split
        if not (out[split] / "dataset.json").exists():
            assert ssrl(["data", "merge", *parts, f"out={out[split]}"]) == 0
        print(f"{env_id} {split}: {info(out[split])['transitions']:,} transitions", flush=True)
    return out["pretrain"], out["probe"]


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95% t-interval."""
    n, mean = len(values), float(np.mean(values))
    if n < 2:
        return mean, float("nan")
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}.get(n, 1.96)
    return mean, float(t * np.std(values, ddof=1) / np.sqrt(n))


def full(args: argparse.Namespace) -> None:
    """The full probe table (module docstring); rows written to probe_full.json as they finish."""
    from ssrl.experiments.pretrain import Pretrainer, parse
    from ssrl.nn.backbone import load_backbone

    console, t0 = Console(), time.perf_counter()
    objectives = args.objectives.split(",")
    rows = []
    if Path(args.out).exists() and args.resume:
        rows = json.loads(Path(args.out).read_text())["rows"]
    done = {(r["objective"], r["domain"], r["seed"]) for r in rows}
    encoder = [f"encoder.num_filters={args.filters}", f"encoder.num_layers={args.layers}",
               f"encoder.feature_dim={args.feature_dim}"]
    backbones = "backbones" if args.feature_dim == 50 else f"backbones-fd{args.feature_dim}"
    for env_id in args.domains.split(","):
        pretrain_data, probe_path = full_data(args, env_id)
        probe = from_dataset(str(probe_path))
        test = probe.episodes % 2 == 1
        positions = position_dims(env_id)
        data = hashlib.sha256(np.ascontiguousarray(probe.states).tobytes()).hexdigest()[:12]
        for objective in objectives:
            for seed in range(args.seeds):
                if (objective, env_id, seed) in done and not args.rescore:
                    continue
                start = time.perf_counter()
                row = {"objective": objective, "domain": env_id, "seed": seed, "data": data}
                if OBJECTIVES[objective] is None:
                    net = random_encoder(probe.observation_space, encoder, seed)
                    if objective == "supervised":
                        row |= supervised_encoder(net, probe.obs[~test], probe.states[~test], args, seed)
                else:
                    out = Path(args.work) / env_id.split("/")[1] / backbones / f"{objective}-seed{seed}"
                    extra = OBJECTIVES[objective] or [f"representation={objective}"]
                    if not (args.rescore and (out / "backbone.safetensors").exists()):
                        Pretrainer(parse([*extra, f"data={pretrain_data}", f"out={out}", f"steps={args.steps}",
                                          f"batch_size={args.batch_size}", f"seed={seed}", f"threads={args.threads}",
                                          *encoder, "progress=false"])).run()
                    net = load_backbone(out)
                    losses = np.loadtxt(out / "pretrain.csv", delimiter=",", skiprows=1, usecols=1, ndmin=1)
                    row |= {"loss_first": float(losses[0]), "loss_last": float(losses[-1])}
                scores = probe_scores(features(net, None, probe.obs), probe.states, test, positions)
                row |= {"r2_positions": scores["linear_r2_positions"], "r2_all": scores["linear_r2_all"],
                        "mlp_r2_positions": scores["mlp_r2_positions"], "mlp_r2_all": scores["mlp_r2_all"],
                        "linear_r2_dims": scores["linear_r2_dims"], "mlp_r2_dims": scores["mlp_r2_dims"],
                        "seconds": round(time.perf_counter() - start, 1)}
                rows = [r for r in rows if (r["objective"], r["domain"], r["seed"]) != (objective, env_id, seed)]
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_full(args, rows, time.perf_counter() - t0)
    full_table(console, rows, args)
    console.print(f"wrote {args.out} ({(time.perf_counter() - t0) / 60:.0f} min)")


def random_encoder(space: gym.spaces.Box, encoder: list[str], seed: int) -> torch.nn.Module:
    """The pixel encoder of the ``encoder.*`` overrides at its initialisation for ``seed`` (the ``random`` rows)."""
    from ssrl.experiments.pretrain import parse
    from ssrl.nn.encoders import PixelEncoder

    torch.manual_seed(seed)
    return PixelEncoder(space, parse(["data=.", "out=.", *encoder]).encoder)


def supervised_encoder(net: torch.nn.Module, obs: np.ndarray, states: np.ndarray, args: argparse.Namespace,
                       seed: int) -> dict:
    """Train ``net`` and a linear head to regress the standardised ``states`` from ``obs`` (shift-augmented
    batches); returns the first and last loss."""
    from ssrl.data import to_torch
    from ssrl.nn.augment import Augment

    augment = Augment("shift", gym.spaces.Box(0, 255, obs.shape[1:], np.uint8))
    target = torch.from_numpy((states - states.mean(0)) / (states.std(0) + 1e-8)).float()
    head = torch.nn.Linear(net.features_dim, states.shape[1])
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    rng, losses = np.random.default_rng(seed), []
    for _ in range(args.steps):
        index = rng.integers(0, len(obs), args.batch_size)
        loss = (head(net(augment(to_torch(obs[index], "cpu")))) - target[index]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:]))}


def write_full(args: argparse.Namespace, rows: list[dict], seconds: float) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "torch": torch.__version__,
                                        "seconds": round(seconds), "rows": rows}, indent=1) + "\n")


def full_table(console: Console, rows: list[dict], args: argparse.Namespace) -> None:
    for env_id in dict.fromkeys(r["domain"] for r in rows):
        table = Table(title=f"{env_id}: probe R^2 on held-out episodes, {args.steps} pretraining steps x batch "
                            f"{args.batch_size}, {args.pixels} px, {args.feature_dim}-d features, mean +- 95% CI over seeds")
        for column in ("objective", "seeds", "linear positions", "linear all", "MLP positions", "MLP all",
                       "loss first -> last"):
            table.add_column(column, justify="left" if column == "objective" else "right")
        for objective in dict.fromkeys(r["objective"] for r in rows):
            group = [r for r in rows if r["domain"] == env_id and r["objective"] == objective]
            if not group:
                continue
            cells = [f"{m:.3f} +- {h:.3f}" for m, h in (t_interval([r[k] for r in group]) for k in
                                                         ("r2_positions", "r2_all", "mlp_r2_positions", "mlp_r2_all"))]
            loss = (f"{np.mean([r['loss_first'] for r in group]):.3f} -> {np.mean([r['loss_last'] for r in group]):.3f}"
                    if "loss_first" in group[0] else "")
            table.add_row(objective, str(len(group)), *cells, loss)
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--updates", type=int, default=3, help="updates per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", default="dmc/cartpole-swingup")
    parser.add_argument("--episodes", type=int, default=10, help="random-policy episodes")
    parser.add_argument("--folds", type=int, default=5, help="episode-wise cross-validation folds of the probe")
    parser.add_argument("--seeds", type=int, default=1, help="pretraining runs per module (init and batch order)")
    parser.add_argument("--probe-size", type=int, default=32)
    parser.add_argument("--probe-updates", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    full_args = parser.add_argument_group("--full")
    full_args.add_argument("--full", action="store_true", help="the full probe table (see above)")
    full_args.add_argument("--pixels", type=int, default=64, help="frame size of the full table's datasets")
    full_args.add_argument("--domains", default="dmc/cartpole-swingup,dmc/finger-spin")
    full_args.add_argument("--objectives", default=",".join(OBJECTIVES))
    full_args.add_argument("--policy-frames", type=int, default=0,
                           help="state SAC frames for the data policy (0: POLICY's per-domain frames)")
    full_args.add_argument("--pretrain-frames", type=int, default=25_000, help="frames per policy, pretraining")
    full_args.add_argument("--probe-frames", type=int, default=30_000, help="frames per policy, probe episodes")
    full_args.add_argument("--steps", type=int, default=1500, help="pretraining steps per objective and seed")
    full_args.add_argument("--batch-size", type=int, default=64)
    full_args.add_argument("--layers", type=int, default=4, help="conv layers (--filters sets the channels)")
    full_args.add_argument("--feature-dim", type=int, default=50,
                           help="size of the encoder's features (other than 50: backbones in backbones-fd<N>)")
    full_args.add_argument("--work", default="runs/bench-probe")
    full_args.add_argument("--out", default=str(FULL_RESULTS))
    full_args.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    full_args.add_argument("--rescore", action="store_true",
                           help="with --resume: probe every row again from its saved backbone (no pretraining)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full:
        return full(args)
    console = Console()

    costs = update_costs(args)
    table = Table(title=f"SAC update cost, batch {args.batch}, {args.size}x{args.size} pixels, "
                        f"{args.filters} filters, {torch.get_num_threads()} threads (median of {args.rounds})")
    for column in ("representation", "s / update", "x none"):
        table.add_column(column, justify="left" if column == "representation" else "right")
    for name, seconds in costs.items():
        table.add_row(name, f"{seconds:.3f}", f"{seconds / costs['none']:.2f}")
    console.print(table)

    probe = probe_table(args)
    frames = probe.pop("frames")["count"]
    table = Table(title=f"Linear probe R^2 ({args.folds}-fold episode-wise CV), {args.task}, {frames} random-policy "
                        f"frames {args.probe_size}x{args.probe_size}, {args.probe_updates} pretraining updates, "
                        f"mean of {args.seeds} seed(s)")
    for column in ("representation", "random init", "pretrained", "gain", "min gain", "loss first -> last",
                   "time s"):
        table.add_column(column, justify="left" if column == "representation" else "right")
    for name, row in probe.items():
        table.add_row(name, f"{row['random_r2']:.3f}", f"{row['trained_r2']:.3f}",
                      f"{row['trained_r2'] - row['random_r2']:+.3f}", f"{row['gain_min']:+.3f}",
                      f"{row['loss_first']:.3f} -> {row['loss_last']:.3f}", f"{row['seconds']:.0f}")
    console.print(table)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "args": vars(args), "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "update_seconds": {k: round(v, 4) for k, v in costs.items()},
        "update_ratio_vs_none": {k: round(v / costs["none"], 2) for k, v in costs.items()},
        "probe": {k: {m: round(v, 4) for m, v in row.items()} for k, row in probe.items()}, "probe_frames": frames,
    }, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
