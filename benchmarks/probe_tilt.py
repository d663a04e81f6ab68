"""Which part of the cartpole pole's sine the full probe table's backbones miss: its size or its sign.

    python benchmarks/probe_tilt.py [--work runs/bench-probe] [--random-dims 50 256 512]

Reads the backbones ``bench_representations.py --full`` saved under ``--work``/cartpole-swingup/backbones* (the
``--feature-dim`` runs' too) and that run's probe episodes. From each backbone's frozen features, and from a random
encoder's (seeds 0-2, at each of ``--random-dims``), it fits the table's ridge probe (even episodes, scored on the
odd ones) to the pole's sine, its size ``|sin|``, its cosine and the cart position. A feature that holds how far the pole tilts but not to which side
scores high on ``|sin|`` and low on the sine. Writes benchmarks/results/probe_tilt.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from bench_representations import random_encoder
from rich.console import Console
from rich.table import Table

from ssrl.eval.probe import features, from_dataset, r2_dims, ridge_fit
from ssrl.nn.backbone import load_backbone

RESULTS = Path(__file__).parent / "results" / "probe_tilt.json"
TARGETS = ("sin", "|sin|", "cos", "cart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-probe"))
    parser.add_argument("--filters", type=int, default=16, help="the random encoder's conv channels (the table's)")
    parser.add_argument("--random-dims", type=int, nargs="+", default=[50],
                        help="feature sizes of the random-encoder controls (match any wider backbones in --work)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.work / "cartpole-swingup"
    probe = from_dataset(str(root / "probe"))
    test = probe.episodes % 2 == 1
    cart, cos, sin = probe.states[:, 0], probe.states[:, 1], probe.states[:, 2]  # cartpole's state: cart, cos, sin, ...
    y = np.stack([sin, np.abs(sin), cos, cart], 1)
    nets = {}
    for dim in args.random_dims:
        for seed in range(3):
            encoder = [f"encoder.num_filters={args.filters}", f"encoder.feature_dim={dim}"]
            nets[f"random{'' if dim == 50 else f'_fd{dim}'}-seed{seed}"] = random_encoder(probe.observation_space,
                                                                                         encoder, seed)
    for path in sorted(root.glob("backbones*/*-seed*/backbone.safetensors")):  # backbones-fd<N>: N-d features
        size = path.parent.parent.name.removeprefix("backbones").removeprefix("-")
        nets[path.parent.name.replace("-seed", f"{size and '_' + size}-seed")] = load_backbone(path.parent)
    rows = []
    for name, net in nets.items():
        x = features(net, None, probe.obs)
        r2 = r2_dims(ridge_fit(x[~test], y[~test])(x[test]), y[test])
        rows.append({"backbone": name, **{t: round(float(v), 4) for t, v in zip(TARGETS, r2)}})
    table = Table(title="cartpole-swingup: linear R^2 on held-out episodes from frozen features")
    for column in ("backbone", *TARGETS):
        table.add_column(column, justify="left" if column == "backbone" else "right")
    for row in rows:
        table.add_row(row["backbone"], *(f"{row[t]:.2f}" for t in TARGETS))
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"work": str(args.work), "frames": len(y), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
