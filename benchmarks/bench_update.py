"""Agent updates/s: ssrl's update against the same networks updated the straightforward way, side by side.

    python benchmarks/bench_update.py [--agents sac,drqv2] [--representation none] [--rounds 3] [--updates 2]

SAC runs at batch 512 and DrQ-v2 at batch 256 (their published batch sizes) on 84x84 RGB stacks of 3 frames.
Rows per agent:

- ``baseline``: written here the way the reference implementations do it, on the same networks (ssrl's encoder,
  critic and actor classes, NCHW, float32; the encoder's forward as in the references: ``obs / 255 - 0.5`` into a
  new tensor, out-of-place ReLUs): float32 obs and next_obs stored separately, a per-sample numpy random
  shift on the CPU (``np.pad(mode="edge")`` + slice), float32 batches. SAC as in CURL/SAC-AE: every network call
  re-encodes its input (critic: online encoder on obs, actor and EMA target encoder on next_obs; actor update:
  actor and critic on obs again, detached), a per-parameter EMA loop. DrQ-v2 as in its reference ``update``:
  online encoder on obs, no-grad online encoder on next_obs, the actor on detached features. With
  ``--representation curl`` the SAC baseline adds CURL's reference contrastive step (a second numpy view, anchor
  through the online encoder, positive through the EMA encoder, bilinear logits, its own optimizer).
- ``ssrl plain``: the agent with ``speed.channels_last=false``.
- ``ssrl no keep_memory``: the agent with ``speed.keep_memory=false`` (glibc's malloc defaults, as the baseline).
- ``ssrl default``: the agent with its default ``speed`` settings.
- ``ssrl bf16``: the default plus ``speed.amp=bf16`` alone.
- ``ssrl fast``: all speed flags (``speed.prefetch=true speed.amp=bf16``, plus ``speed.compile=true`` with
  ``--compile``); bf16 changes the numerics, the other flags do not.

``speed.keep_memory`` is process-wide, so it is set before every update to the variant's value (the baseline
runs under glibc's defaults), and each variant's timed updates follow one untimed update. The machine is shared,
so variants are timed in alternating order within each round and the table reports
medians over rounds; ratios are to the baseline of the same agent. Writes benchmarks/results/update.json
(``--out`` to change).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from profile_update import filled_replay
from rich.console import Console
from rich.table import Table
from torch import nn

from ssrl.agents import OffPolicyAgent, make_agent
from ssrl.config import parse_overrides
from ssrl.nn.utils import keep_freed_memory

RESULTS = Path(__file__).parent / "results" / "update.json"
BATCH = {"sac": 512, "drqv2": 256}
ACTION_DIM = 6  # cheetah-run


# ---------------------------------------------------------------------------------------------- baseline
class FloatReplay:
    """Reference-style replay: float32 obs and next_obs arrays (each frame stack stored twice)."""

    def __init__(self, frames: np.ndarray, capacity: int, action_dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        pick = lambda: frames[rng.integers(len(frames), size=capacity)].astype(np.float32)
        self.obs, self.next_obs = pick(), pick()
        self.action = rng.uniform(-1, 1, (capacity, action_dim)).astype(np.float32)
        self.reward = rng.normal(size=(capacity, 1)).astype(np.float32)
        self.discount = np.full((capacity, 1), 0.99, np.float32)
        self.rng = rng

    def sample(self, batch_size: int) -> tuple[np.ndarray, ...]:
        idx = self.rng.integers(len(self.obs), size=batch_size)
        return self.obs[idx], self.action[idx], self.reward[idx], self.discount[idx], self.next_obs[idx]


def numpy_shift(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Per-sample random shift on the CPU: edge-pad each image, slice a random window."""
    _, _, h, w = images.shape
    out = np.empty_like(images)
    for i, image in enumerate(images):
        padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
        dy, dx = rng.integers(0, 2 * pad + 1, size=2)
        out[i] = padded[:, dy : dy + h, dx : dx + w]
    return out


class ReferenceEncoder(nn.Module):
    """The reference implementations' encoder forward on ssrl's encoder weights: the pixels normalised into a new
    float tensor (``obs / 255 - 0.5``), then the convs with out-of-place ReLUs, then the head."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.features_dim = encoder, encoder.features_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 - 0.5
        for layer in self.encoder.convs:
            x = F.relu(x) if isinstance(layer, nn.ReLU) else layer(x)
        return self.encoder.head(x.flatten(1))


class Baseline:
    """The same networks as ``agent`` (copied, NCHW, no speed settings), updated the straightforward way."""

    def __init__(self, agent: OffPolicyAgent, replay: FloatReplay, curl: bool) -> None:
        self.kind, self.cfg, self.replay = agent.cfg.name, agent.cfg, replay
        self.rng = np.random.default_rng(1)
        self.encoder = ReferenceEncoder(copy.deepcopy(agent.encoder).to(memory_format=torch.contiguous_format))
        self.critic, self.critic_target = copy.deepcopy(agent.critic), copy.deepcopy(agent.critic_target)
        self.actor = copy.deepcopy(agent.actor)
        self.encoder_target = copy.deepcopy(self.encoder) if self.kind == "sac" else None
        lr = self.cfg.lr
        self.critic_opt = torch.optim.Adam([*self.critic.parameters(), *self.encoder.parameters()], lr=lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        if self.kind == "sac":
            self.log_alpha = agent.log_alpha.detach().clone().requires_grad_(True)
            self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=self.cfg.alpha_lr, betas=(self.cfg.alpha_beta, 0.999))
            self.target_entropy = -float(agent.action_dim)
        self.curl_w = None
        if curl:
            dim = self.encoder.features_dim
            self.curl_w = torch.rand(dim, dim, requires_grad=True)
            self.curl_opt = torch.optim.Adam([*self.encoder.parameters(), self.curl_w], lr=1e-3)
        self.step = 0

    def update(self) -> None:
        obs, action, reward, discount, next_obs = self.replay.sample(self.cfg.batch_size)
        pos = numpy_shift(obs, self.rng) if self.curl_w is not None else None
        obs, next_obs = numpy_shift(obs, self.rng), numpy_shift(next_obs, self.rng)
        obs, action, reward, discount, next_obs = (torch.as_tensor(x) for x in (obs, action, reward, discount, next_obs))
        if self.kind == "sac":
            self.sac_update(obs, action, reward, discount, next_obs)
        else:
            self.drqv2_update(obs, action, reward, discount, next_obs)
        if pos is not None:
            self.curl_update(obs, torch.as_tensor(pos))
        self.step += 1

    def sac_update(self, obs, action, reward, discount, next_obs) -> None:
        alpha = self.log_alpha.exp()
        with torch.no_grad():
            next_action, log_prob = self.actor(self.encoder(next_obs))
            tq1, tq2 = self.critic_target(self.encoder_target(next_obs), next_action)
            target_q = reward + discount * (torch.min(tq1, tq2) - alpha.detach() * log_prob)
        q1, q2 = self.critic(self.encoder(obs), action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        if self.step % self.cfg.actor_update_every == 0:
            pi, log_prob = self.actor(self.encoder(obs).detach())
            aq1, aq2 = self.critic(self.encoder(obs).detach(), pi)
            actor_loss = (alpha.detach() * log_prob - torch.min(aq1, aq2)).mean()
            self.actor_opt.zero_grad()
            actor_loss.backward()
            self.actor_opt.step()
            alpha_loss = (alpha * (-log_prob - self.target_entropy).detach()).mean()
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
        if self.step % self.cfg.target_update_every == 0:
            for net, target, tau in ((self.critic, self.critic_target, self.cfg.critic_tau),
                                     (self.encoder, self.encoder_target, self.cfg.encoder_tau)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.data.copy_(tau * p.data + (1 - tau) * tp.data)

    def drqv2_update(self, obs, action, reward, discount, next_obs) -> None:
        from ssrl.agents.drqv2 import noisy

        features = self.encoder(obs)
        with torch.no_grad():
            next_features = self.encoder(next_obs)
            next_action = noisy(self.actor(next_features), 0.2, self.cfg.stddev_clip)
            tq1, tq2 = self.critic_target(next_features, next_action)
            target_q = reward + discount * torch.min(tq1, tq2)
        q1, q2 = self.critic(features, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        pi = noisy(self.actor(features.detach()), 0.2, self.cfg.stddev_clip)
        aq1, aq2 = self.critic(features.detach(), pi)
        actor_loss = -torch.min(aq1, aq2).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
            tp.data.copy_(self.cfg.critic_tau * p.data + (1 - self.cfg.critic_tau) * tp.data)

    def curl_update(self, anchor: torch.Tensor, pos: torch.Tensor) -> None:
        z_a = self.encoder(anchor)
        with torch.no_grad():
            z_pos = self.encoder_target(pos)
        logits = z_a @ self.curl_w @ z_pos.T
        logits = logits - logits.max(1, keepdim=True)[0]
        loss = F.cross_entropy(logits, torch.arange(len(logits)))
        self.curl_opt.zero_grad()
        loss.backward()
        self.curl_opt.step()


# -------------------------------------------------------------------------------------------- benchmark
def updates_per_second(update: Callable[[], Any], updates: int, clock: Callable[[], float]) -> float:
    """Timed after one untimed update: the first after switching ``speed.keep_memory`` regrows the heap."""
    update()
    start = clock()
    for _ in range(updates):
        update()
    return updates / (clock() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="sac,drqv2")
    parser.add_argument("--representation", default="none", help="for SAC, e.g. curl (DrQ-v2 rows use none)")
    parser.add_argument("--batch", type=int, default=0, help="one batch size for every agent (default: SAC 512, DrQ-v2 256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=2, help="timed updates per variant per round (even for SAC)")
    parser.add_argument("--compile", action="store_true", help="add speed.compile=true to the fast row")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (user + system), steadier than wall time on a loaded "
                             "machine; use it with --threads 1 (idle threads spinning count as CPU time)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fast_flags = ["speed.prefetch=true", "speed.amp=bf16"] + (["speed.compile=true"] if args.compile else [])
    device = torch.device(args.device)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    results: dict[str, Any] = {}
    console = Console()
    for kind in args.agents.split(","):
        representation = args.representation if kind == "sac" else "none"
        batch = args.batch or BATCH[kind]
        base = [f"agent={kind}", f"agent.batch_size={batch}", f"representation={representation}", f"device={device}"]
        cfg = parse_overrides(base)
        replay, space = filled_replay(cfg, 2000, ACTION_DIM)
        action_space = gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32)
        frames = np.stack([replay.sample(1)["obs"][0] for _ in range(64)])
        variants: dict[str, Callable[[], Any]] = {}
        rows = (("ssrl plain", ["speed.channels_last=false"]), ("ssrl no keep_memory", ["speed.keep_memory=false"]),
                ("ssrl default", []), ("ssrl bf16", ["speed.amp=bf16"]), ("ssrl fast", fast_flags))
        for name, flags in rows:
            torch.manual_seed(0)
            agent = make_agent(parse_overrides(base + flags), space, action_space, device)
            variants[name] = lambda agent=agent, replay=replay: (keep_freed_memory(agent.speed.keep_memory),
                                                                 agent.update(replay, frame=0))
            if name == "ssrl plain":
                baseline = Baseline(agent, FloatReplay(frames, batch, ACTION_DIM), curl=representation == "curl")
                variants = {"baseline": lambda b=baseline: (keep_freed_memory(False), b.update())} | variants
        for update in variants.values():  # warm-up (and compilation)
            update()
        rates: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                rates[name].append(updates_per_second(variants[name], args.updates, clock))
                console.print(f"{kind} round {r}: {name} {rates[name][-1]:.3f} updates/s", highlight=False)
        median = {name: statistics.median(v) for name, v in rates.items()}
        results[kind] = {
            "batch_size": batch, "representation": representation,
            "updates_per_s": {name: round(v, 4) for name, v in median.items()},
            "over_baseline": {name: round(v / median["baseline"], 2) for name, v in median.items()},
            "per_round_updates_per_s": {name: [round(x, 4) for x in v] for name, v in rates.items()},
        }

    table = Table(title=f"updates/s ({args.clock} time), {device}, {torch.get_num_threads()} threads, {os.cpu_count()} cores "
                        f"(median of {args.rounds} rounds x {args.updates} updates)")
    for column in ("agent", "batch", "variant", "updates/s", "vs baseline"):
        table.add_column(column, justify="right" if column in ("batch", "updates/s", "vs baseline") else "left")
    for kind, res in results.items():
        for name, rate in res["updates_per_s"].items():
            table.add_row(f"{kind}" + (f"+{res['representation']}" if res["representation"] != "none" else ""),
                          str(res["batch_size"]), name, f"{rate:.3f}", f"{res['over_baseline'][name]:.2f}x")
    console.print(table)
    console.print(f"ssrl fast = {' '.join(fast_flags)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "device": str(device), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.machine(), "torch": torch.__version__, "obs_shape": list(space.shape),
        "rounds": args.rounds, "updates_per_round": args.updates, "clock": args.clock, "fast_flags": fast_flags,
        "load_average": os.getloadavg(), "results": results,
    }, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
