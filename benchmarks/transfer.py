"""Transfer table: behaviour cloning on MetaWorld from a pretrained backbone vs scratch vs a frozen random encoder.

    python benchmarks/transfer.py [--tasks reach-v3] [--demos 10] [--seeds 2] [--rollouts 20] [--size 64]

1. `ssrl collect` reward-free frames with a random policy on the tasks (one dataset per task; the pretraining
   set is the first task's frames),
2. `ssrl pretrain` a pixel encoder on them (--representation, default curl),
3. `ssrl transfer` for backbone = scratch, random (frozen), pretrained (frozen), pretrained (fine-tuned).
All four use the same demonstrations, seeds and held-out initial states. Prints the table and writes
benchmarks/results/transfer.json (and .md). Work files go to --work (default runs/bench-transfer).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from ssrl.data.dataset import info
from ssrl.experiments import transfer
from ssrl.experiments.collect import collect
from ssrl.experiments.pretrain import Pretrainer, parse

RESULTS = Path(__file__).parent / "results" / "transfer.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="reach-v3")
    parser.add_argument("--demos", default="10")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--bc-steps", type=int, default=500)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=5000, help="random-policy frames collected for pretraining")
    parser.add_argument("--representation", default="curl")
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64, help="pretraining and BC batch size")
    parser.add_argument("--horizon", type=int, default=150, help="max steps per demo/rollout episode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="runs/bench-transfer")
    args = parser.parse_args()
    console = Console()
    work = Path(args.work)
    t0 = time.perf_counter()

    first = args.tasks.split(",")[0]
    data = work / f"random-{first}-{args.size}px"
    if not (data / "dataset.json").exists():
        collect(f"mw/{first}", "random", args.frames, data, size=args.size, frame_stack=1, progress=False)
    console.print(f"pretraining data: {info(data)}")
    backbone = work / f"backbone-{args.representation}-{args.size}px"
    Pretrainer(parse([f"representation={args.representation}", f"data={data}", f"steps={args.pretrain_steps}",
                      f"batch_size={args.batch_size}", f"warmup={args.pretrain_steps // 10}", f"out={backbone}",
                      *([] if args.representation == "curl" else ["representation.k=2"]), f"threads={args.threads}",
                      "progress=false"])).run()

    base = transfer.parse([f"tasks={args.tasks}", f"demos={args.demos}", f"seeds={args.seeds}",
                           f"rollouts={args.rollouts}", f"steps={args.bc_steps}", f"batch_size={args.batch_size}", f"size={args.size}",
                           f"horizon={args.horizon}",
                           "frame_stack=1", f"out={work / 'transfer'}", f"threads={args.threads}", "progress=false"])
    rows = []
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for name, freeze in (("scratch", True), ("random", True), (str(backbone), True), (str(backbone), False)):
        rows += transfer.run(replace(base, backbone=name, freeze=freeze))
        result = {"args": vars(args), "machine": platform.processor() or platform.machine(),
                  "seconds": time.perf_counter() - t0, "rows": rows,
                  "pretrain_card": json.loads((backbone / "backbone.json").read_text())}
        RESULTS.write_text(json.dumps(result, indent=2))  # after each backbone, so a cut-short run keeps its rows
        RESULTS.with_suffix(".md").write_text(transfer.markdown(rows))
    console.rule("transfer table")
    transfer.print_table(rows)
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
