"""Where one agent update spends its time: replay sampling, to_torch, augmentation, each encoder pass, each
backward, each optimizer step, the target EMA and the representation objective.

    python benchmarks/profile_update.py [--agent sac] [--batch 512] [--updates 6] [key=value ...]
    python benchmarks/profile_update.py --agent drqv2 --batch 256 speed.channels_last=false
    python benchmarks/profile_update.py --agent sac representation=curl --trace trace.json

Profiles the agent's own ``update()`` (no copy of it): wall-clock timers (with CUDA synchronisation) are
attached from outside, to the replay's ``sample``/``sample_sequences``, to ``to_torch``, to forward hooks of the
agent's modules (``augment``, ``encoder``, ``encoder_target``, ``critic``, ...), to the ``update_*`` methods,
to ``Tensor.backward`` and to every optimizer's ``step``/``zero_grad``. Each line is exclusive time under its
parent (``update_critic/encoder_target`` is the target-encoder pass inside ``update_critic``). A representation
module shows up as its own ``update_representation`` block. ``--trace`` also records a torch.profiler trace
(chrome://tracing) of the same updates. Prints a table and writes benchmarks/results/profile_<agent>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import ssrl.agents.base as agent_base
from ssrl.agents import OffPolicyAgent, make_agent
from ssrl.config import TrainConfig, parse_overrides
from ssrl.data import ReplayBuffer

RESULTS = Path(__file__).parent / "results"
MODULES = ("augment", "encoder", "encoder_target", "critic", "critic_target", "actor", "representation")
METHODS = ("update_critic", "update_actor", "update_representation", "update_targets")


def filled_replay(cfg: TrainConfig, steps: int, action_dim: int, seed: int = 0) -> tuple[ReplayBuffer, gym.Space]:
    """A replay of random uint8 frames (episodes of 250 steps), the layout ``ssrl train`` uses for pixels."""
    channels = 3 * cfg.frame_stack
    space = gym.spaces.Box(0, 255, (channels, cfg.size, cfg.size), np.uint8)
    actions = gym.spaces.Box(-1, 1, (action_dim,), np.float32)
    replay = ReplayBuffer(space, actions, steps + 8, frame_stack=cfg.frame_stack, n_step=cfg.agent.n_step,
                          gamma=cfg.agent.discount, seed=seed)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (64, channels, cfg.size, cfg.size), dtype=np.uint8)  # reused: content is irrelevant
    replay.add_first(frames[0])
    for step in range(1, steps):
        done = step % 250 == 0
        replay.add(rng.uniform(-1, 1, action_dim).astype(np.float32), float(rng.normal()), frames[step % 64],
                   terminated=False, truncated=done)
        if done:
            replay.add_first(frames[step % 64])
    return replay, space


class Timer:
    """Nested wall-clock timers keyed by path (``update_critic/encoder``); records exclusive time per path.

    Only the main thread is timed (a background prefetch is what it saves, not what it costs)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list[Any]] = []  # [path, start, child time]
        self.main = threading.get_ident()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self, name: str) -> bool:
        if threading.get_ident() != self.main:
            return False
        self._sync()
        path = f"{self.stack[-1][0]}/{name}" if self.stack else name
        self.stack.append([path, time.perf_counter(), 0.0])
        return True

    def stop(self) -> None:
        self._sync()
        path, start, children = self.stack.pop()
        elapsed = time.perf_counter() - start
        self.totals[path] += elapsed - children
        self.calls[path] += 1
        if self.stack:
            self.stack[-1][2] += elapsed

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        started = self.start(name)
        try:
            yield
        finally:
            if started:
                self.stop()

    def wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.section(name):
                return fn(*args, **kwargs)

        return timed


@contextlib.contextmanager
def instrument(agent: OffPolicyAgent, replay: ReplayBuffer, timer: Timer) -> Iterator[None]:
    """Attach the timers; everything is restored on exit."""
    undo: list[Callable[[], None]] = []

    for attr in ("sample", "sample_sequences"):
        setattr(replay, attr, timer.wrap(f"replay.{attr}", getattr(replay, attr)))
        undo.append(functools.partial(delattr, replay, attr))
    original_to_torch = agent_base.to_torch
    agent_base.to_torch = timer.wrap("to_torch", original_to_torch)
    undo.append(lambda: setattr(agent_base, "to_torch", original_to_torch))
    for name in METHODS:
        if hasattr(agent, name):
            setattr(agent, name, timer.wrap(name, getattr(agent, name)))
            undo.append(functools.partial(delattr, agent, name))
    for name, opt in agent.optimizers().items():
        for attr in ("step", "zero_grad"):
            setattr(opt, attr, timer.wrap(f"{name}_opt.{attr}", getattr(opt, attr)))
            undo.append(functools.partial(delattr, opt, attr))
    original_backward = torch.Tensor.backward
    torch.Tensor.backward = timer.wrap("backward", original_backward)
    undo.append(lambda: setattr(torch.Tensor, "backward", original_backward))
    for name in MODULES:
        module = getattr(agent, name, None)
        if isinstance(module, torch.nn.Module):
            started: list[bool] = []
            pre = module.register_forward_pre_hook(lambda *_, n=name, s=started: s.append(timer.start(n)))
            post = module.register_forward_hook(lambda *_, s=started: timer.stop() if s.pop() else None)
            undo += [pre.remove, post.remove]
    try:
        yield
    finally:
        for fn in reversed(undo):
            fn()


def profile(agent: OffPolicyAgent, replay: ReplayBuffer, updates: int, warmup: int,
            trace: Path | None = None) -> tuple[dict[str, float], float]:
    """Mean exclusive ms per update for each path, and the mean wall ms of a whole update."""
    for _ in range(warmup):
        agent.update(replay, frame=0)
    timer = Timer(agent.device)
    profiler = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                       + ([torch.profiler.ProfilerActivity.CUDA] if agent.device.type == "cuda" else []))
                if trace else contextlib.nullcontext())
    with instrument(agent, replay, timer), profiler:
        for _ in range(updates):
            with timer.section("update"):
                agent.update(replay, frame=0)
    if trace:
        profiler.export_chrome_trace(str(trace))
    per_update = {path: 1e3 * total / updates for path, total in timer.totals.items()}
    return per_update, sum(per_update.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", default="sac", choices=["sac", "drqv2"])
    parser.add_argument("--batch", type=int, default=0, help="default: the agent's (SAC 512, DrQ-v2 256)")
    parser.add_argument("--updates", type=int, default=6, help="timed updates (even: SAC updates its actor every 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--replay-steps", type=int, default=2000)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--trace", type=Path, default=None, help="also write a torch.profiler chrome trace here")
    parser.add_argument("overrides", nargs="*", help="config keys, e.g. representation=curl speed.channels_last=false")
    args = parser.parse_args()

    overrides = [f"agent={args.agent}", *args.overrides]
    if args.batch:
        overrides.append(f"agent.batch_size={args.batch}")
    cfg = parse_overrides(overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    replay, space = filled_replay(cfg, args.replay_steps, args.action_dim)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)
    agent = make_agent(cfg, space, gym.spaces.Box(-1, 1, (args.action_dim,), np.float32), device)
    per_update, total = profile(agent, replay, args.updates, args.warmup, args.trace)

    title = (f"{cfg.agent.name} representation={cfg.representation.name} batch {cfg.agent.batch_size} "
             f"{cfg.size}x{cfg.size}x{3 * cfg.frame_stack}, {device}, {torch.get_num_threads()} threads: "
             f"{total:.0f} ms/update = {1e3 / total:.2f} updates/s")
    table = Table(title=title)
    for column in ("part (exclusive time)", "ms/update", "share"):
        table.add_column(column, justify="left" if column.startswith("part") else "right")
    for path, ms in sorted(per_update.items(), key=lambda kv: kv[0]):
        depth = path.count("/")
        table.add_row("  " * depth + path.rsplit("/", 1)[-1] if depth else path, f"{ms:.1f}", f"{100 * ms / total:.1f}%")
    console = Console()
    console.print(table)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"profile_{cfg.agent.name}.json"
    out.write_text(json.dumps({
        "agent": cfg.agent.name, "representation": cfg.representation.name, "batch_size": cfg.agent.batch_size,
        "obs_shape": list(space.shape), "device": str(device), "threads": torch.get_num_threads(),
        "overrides": args.overrides, "updates": args.updates, "ms_per_update": round(total, 2),
        "updates_per_s": round(1e3 / total, 3),
        "exclusive_ms_per_update": {path: round(ms, 3) for path, ms in sorted(per_update.items())},
    }, indent=2) + "\n")
    console.print(f"wrote {out}" + (f" and {args.trace}" if args.trace else ""))


if __name__ == "__main__":
    main()
