"""Mutation check of the math tests: hand-written bugs, each of which the tests must catch.

    python benchmarks/mutants.py [--only NAME ...] [--list] [--timeout 300]

Each mutant is one exact snippet of one file under ssrl/ and its replacement (the snippet must occur exactly once
in that file, or the script stops before running anything). For each mutant the script copies ssrl/, tests/ and
pyproject.toml into a temporary directory, applies the patch there (the working tree is never modified), and runs
``pytest -x -q`` on the mutant's test files with PYTHONPATH pointing at the copy. A failing run kills the mutant
(the first failing test is recorded); a passing one means it survived. An unmutated baseline run of every test
file used must pass first. Prints a table and writes benchmarks/results/mutants.json (docs/testing.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutants.json"

REPLAY = ["tests/test_math_replay.py", "tests/test_replay_protocol.py"]
AGENTS = ["tests/test_math_agents.py",
          "tests/test_agents.py::test_actor_loss_leaves_encoder_untouched_and_critic_loss_trains_it"]
PPO = ["tests/test_math_ppo.py", "tests/test_ppo.py::test_gae_and_returns_on_a_hand_computed_rollout"]
REPR = ["tests/test_math_representations.py"]
BATCHED = ["tests/test_batched.py"]


@dataclass
class Mutant:
    name: str
    file: str
    original: str
    replacement: str
    description: str
    tests: list[str]


MUTANTS = [
    # ------------------------------------------------------------------ n-step returns and replays
    Mutant("nstep-window-off-by-one", "ssrl/data/nstep.py",
           "m = torch.where(first_end < n, first_end + 1, available.clamp(max=n))",
           "m = torch.where(first_end < n, first_end, available.clamp(max=n))",
           "n-step window stops one step before the episode's end", REPLAY),
    Mutant("nstep-reward-inclusive", "ssrl/data/nstep.py",
           "torch.where(i < m[:, None], rewards * powers, 0.0)",
           "torch.where(i <= m[:, None], rewards * powers, 0.0)",
           "n-step return sums one reward too many", REPLAY),
    Mutant("nstep-no-terminal-cut", "ssrl/data/nstep.py",
           "discount = torch.where(terminated, 0.0, torch.full_like(reward, gamma) ** m)",
           "discount = torch.full_like(reward, gamma) ** m",
           "no (1 - done): terminal transitions bootstrap", REPLAY),
    Mutant("host-truncation-is-termination", "ssrl/data/host_replay.py",
           "self._ep_term[e] = bool(terminated)",
           "self._ep_term[e] = bool(terminated or truncated)",
           "ReplayBuffer treats a truncated episode as terminated (no bootstrap)", REPLAY),
    Mutant("device-truncation-is-termination", "ssrl/data/device_replay.py",
           "self._term[i] = torch.as_tensor(terminated, device=self.device)",
           "self._term[i] = done",
           "DeviceReplay treats a truncated episode as terminated (no bootstrap)", REPLAY),
    Mutant("host-next-obs-off-by-one", "ssrl/data/host_replay.py",
           '"next_obs": self._obs(t + m.numpy(), start)',
           '"next_obs": self._obs(t + m.numpy() - 1, start)',
           "ReplayBuffer's next_obs is obs t+m-1 instead of t+m", REPLAY),
    Mutant("device-next-obs-off-by-one", "ssrl/data/device_replay.py",
           "last = t + m - 1",
           "last = t + m",
           "DeviceReplay's next_obs follows step t+m instead of t+m-1", REPLAY),
    # ------------------------------------------------------------------ SAC / DrQ-v2
    Mutant("sac-target-online-encoder", "ssrl/agents/base.py",
           "target_encoder = self.encoder if self.encoder_target is None else self.encoder_target",
           "target_encoder = self.encoder",
           "SAC's targets use the online encoder instead of its EMA copy", AGENTS),
    Mutant("sac-target-online-critic", "ssrl/agents/sac.py",
           "q1, q2 = self.critic_target(next_features, next_action)",
           "q1, q2 = self.critic(next_features, next_action)",
           "SAC's target value uses the online critic instead of the EMA target critic", AGENTS),
    Mutant("drqv2-target-online-critic", "ssrl/agents/drqv2.py",
           "q1, q2 = self.critic_target(next_features, next_action)",
           "q1, q2 = self.critic(next_features, next_action)",
           "DrQ-v2's target value uses the online critic instead of the EMA target critic", AGENTS),
    Mutant("sac-target-entropy-sign", "ssrl/agents/sac.py",
           "return torch.min(q1, q2) - self.alpha.detach() * log_prob",
           "return torch.min(q1, q2) + self.alpha.detach() * log_prob",
           "soft target adds alpha * log pi instead of subtracting it", AGENTS),
    Mutant("sac-target-max-q", "ssrl/agents/sac.py",
           "return torch.min(q1, q2) - self.alpha.detach() * log_prob",
           "return torch.max(q1, q2) - self.alpha.detach() * log_prob",
           "target takes the max of the two target Qs (no clipped double-Q)", AGENTS),
    Mutant("drqv2-target-noise-unclipped", "ssrl/agents/drqv2.py",
           "next_action = noisy(self.actor(next_features), self.stddev(frame), self.cfg.stddev_clip)",
           "next_action = noisy(self.actor(next_features), self.stddev(frame), None)",
           "DrQ-v2 target policy noise is not clipped", AGENTS),
    Mutant("schedule-reversed", "ssrl/nn/utils.py",
           "return (1.0 - mix) * start + mix * end",
           "return (1.0 - mix) * end + mix * start",
           "linear schedule runs from end to start", AGENTS),
    Mutant("tanh-jacobian-sign", "ssrl/agents/sac.py",
           "log_prob = log_prob - torch.log(torch.relu(1 - action.pow(2)) + 1e-6)",
           "log_prob = log_prob + torch.log(torch.relu(1 - action.pow(2)) + 1e-6)",
           "tanh change of variables with the wrong sign", AGENTS),
    Mutant("gaussian-normaliser-one-dim", "ssrl/agents/sac.py",
           "- 0.5 * math.log(2 * math.pi) * mu.shape[-1]",
           "- 0.5 * math.log(2 * math.pi)",
           "Gaussian log-density normaliser counted once instead of per action dimension", AGENTS),
    Mutant("temperature-loss-sign", "ssrl/agents/sac.py",
           "alpha_loss = (self.alpha * (-log_prob - self.target_entropy).detach()).mean()",
           "alpha_loss = (self.alpha * (log_prob - self.target_entropy).detach()).mean()",
           "temperature loss uses +log pi: alpha falls when entropy is too low", AGENTS),
    Mutant("target-entropy-sign", "ssrl/agents/sac.py",
           "self.target_entropy = -float(self.action_dim)",
           "self.target_entropy = float(self.action_dim)",
           "target entropy +|A| instead of -|A|", AGENTS),
    Mutant("actor-features-not-detached", "ssrl/agents/base.py",
           "metrics |= self.update_actor(features.detach(), frame)",
           "metrics |= self.update_actor(features, frame)",
           "the actor is given the encoder's graph (features not detached)", AGENTS),
    Mutant("critic-does-not-train-encoder", "ssrl/agents/base.py",
           "features = self.encoder(obs)\n",
           "features = self.encoder(obs).detach()\n",
           "critic loss no longer reaches the encoder", AGENTS),
    Mutant("ema-tau-swapped", "ssrl/nn/utils.py",
           "torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)",
           "torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), 1 - tau)",
           "EMA target <- (1 - tau) online + tau target", AGENTS + REPR),
    Mutant("critic-ema-uses-encoder-tau", "ssrl/agents/base.py",
           "soft_update(self.critic_target, self.critic, self.cfg.critic_tau)",
           "soft_update(self.critic_target, self.critic, self.encoder_tau or self.cfg.critic_tau)",
           "SAC's critic target moves at the encoder's EMA rate", AGENTS),
    # ------------------------------------------------------------------ PPO
    Mutant("gae-lambda-dropped", "ssrl/agents/ppo.py",
           "last = delta + cfg.gamma * cfg.gae_lambda * not_done * last",
           "last = delta + cfg.gamma * not_done * last",
           "GAE trace without lambda", PPO),
    Mutant("gae-values-t", "ssrl/agents/ppo.py",
           "else self.values[t + 1]",
           "else self.values[t]",
           "GAE bootstraps from values[t] instead of values[t+1]", PPO),
    Mutant("gae-bootstrap-through-done", "ssrl/agents/ppo.py",
           "delta = self.rewards[t] + cfg.gamma * value_next * not_done - self.values[t]",
           "delta = self.rewards[t] + cfg.gamma * value_next - self.values[t]",
           "TD error bootstraps across episode ends", PPO),
    Mutant("ppo-truncation-not-bootstrapped", "ssrl/agents/ppo.py",
           "reward = reward + cfg.gamma * torch.where(cut, final_value, 0.0)",
           "reward = reward + 0.0 * torch.where(cut, final_value, 0.0)",
           "truncation treated as termination (no bootstrap from the final observation)", PPO),
    Mutant("ppo-truncation-bootstraps-reset-obs", "ssrl/agents/ppo.py",
           'final_value = model.value(info["final_obs"].to(self.device))',
           "final_value = model.value(obs.to(self.device))",
           "truncated step bootstraps from the next episode's first observation", PPO),
    Mutant("ppo-bootstraps-terminal-time-limit", "ssrl/agents/ppo.py",
           "cut = truncated & ~terminated",
           "cut = truncated",
           "a step both terminated and truncated is bootstrapped (the bug fixed in this branch)", PPO),
    Mutant("ppo-clip-min", "ssrl/agents/ppo.py",
           "policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()",
           "policy_loss = torch.min(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()",
           "clipped surrogate takes the optimistic bound (min of the losses)", PPO),
    Mutant("ppo-advantage-sign", "ssrl/agents/ppo.py",
           "policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()",
           "policy_loss = torch.max(adv * ratio, adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()",
           "policy loss sign flipped (minimises the advantage)", PPO),
    Mutant("ppo-value-clip-min", "ssrl/agents/ppo.py",
           'value_loss = torch.max(value_loss, (clipped - mb["returns"]) ** 2)',
           'value_loss = torch.min(value_loss, (clipped - mb["returns"]) ** 2)',
           "clipped value loss takes the min instead of the max", PPO),
    # ------------------------------------------------------------------ representations
    Mutant("curl-labels-zero", "ssrl/representations/curl.py",
           "labels = torch.arange(logits.shape[0], device=logits.device)",
           "labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)",
           "InfoNCE labels all 0", REPR),
    Mutant("curl-no-bilinear-w", "ssrl/representations/curl.py",
           "logits = query @ self.W @ key.T",
           "logits = query @ key.T",
           "CURL logits without the bilinear W", REPR),
    Mutant("curl-max-over-keys-dim", "ssrl/representations/curl.py",
           "logits = logits - logits.max(dim=1, keepdim=True).values.detach()",
           "logits = logits - logits.max(dim=0, keepdim=True).values.detach()",
           "max subtracted per column instead of per row (changes the softmax)", REPR),
    Mutant("spr-no-normalize", "ssrl/representations/base.py",
           "return 2.0 - 2.0 * F.cosine_similarity(prediction, target, dim=-1)",
           "return 2.0 - 2.0 * (prediction * target).sum(-1)",
           "SPR/BYOL loss on unnormalised vectors", REPR),
    Mutant("spr-mean-over-k", "ssrl/representations/spr.py",
           "loss = per_step.sum()",
           "loss = per_step.mean()",
           "SPR loss averaged over the K steps instead of summed", REPR),
    Mutant("spr-targets-off-by-one", "ssrl/representations/spr.py",
           "take(obs, slice(1, None))",
           "take(obs, slice(0, -1))",
           "SPR predicts obs t+k-1 instead of t+k", REPR),
    Mutant("vicreg-biased-variance", "ssrl/representations/base.py",
           "cov = centred.T @ centred / (n - 1)",
           "cov = centred.T @ centred / n",
           "VICReg variance and covariance on the biased (1/N) estimates", REPR),
    Mutant("vicreg-covariance-with-diagonal", "ssrl/representations/base.py",
           "(cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d",
           "cov.pow(2).sum() / d",
           "VICReg covariance term counts the variances too", REPR),
    Mutant("world-model-vicreg-on-last-latent", "ssrl/representations/world_model.py",
           "variance_covariance(z0, self.cfg.variance_target)",
           "variance_covariance(z, self.cfg.variance_target)",
           "VICReg terms on the last predicted latent instead of the encoder's", REPR),
    Mutant("masked-vicreg-on-detached-latents", "ssrl/representations/masked.py",
           "variance_covariance(z, self.cfg.variance_target)",
           "variance_covariance(z.detach(), self.cfg.variance_target)",
           "masked's VICReg terms do not train the encoder", REPR),
    Mutant("masked-vicreg-without-covariance", "ssrl/representations/masked.py",
           "self.cfg.variance_coef * variance + self.cfg.covariance_coef * covariance",
           "self.cfg.variance_coef * variance",
           "masked drops the VICReg covariance term", REPR),
    Mutant("masked-latent-tokens-at-masked-steps", "ssrl/representations/masked.py",
           "masked_scatter(~hidden.unsqueeze(-1), visible)", "masked_scatter(hidden.unsqueeze(-1), visible)",
           "latent masking puts the visible observations' tokens at the masked steps", REPR),
    Mutant("masked-latent-predicts-visible-steps", "ssrl/representations/masked.py",
           "self.latent_head(out[hidden])", "self.latent_head(out[~hidden])",
           "latent masking predicts at the visible steps", REPR),
    Mutant("masked-latent-target-by-online-encoder", "ssrl/representations/masked.py",
           "self.target_encoder(self._rows(frames, hidden))", "encoder(self._rows(frames, hidden))",
           "latent masking's targets come from the online encoder, not its EMA copy", REPR),
    # ------------------------------------------------------------------ batched env: repeats from one rollout
    Mutant("rollout-derived-fields-one-substep-early", "ssrl/envs/batched/backends.py",
           "record[:-1] = rows[:, last[:-1] + 1].swapaxes(0, 1)",
           "record[:-1] = rows[:, last[:-1]].swapaxes(0, 1)",
           "a repeat's rewards read the positions of the state before its last substep", BATCHED),
    Mutant("rollout-without-final-forward", "ssrl/envs/batched/backends.py",
           "            self.batch.forward(None, stage=mujoco.mjtStage.mjSTAGE_VEL)\n",
           "            pass\n",
           "the last repeat's reward and the observation read derived fields one substep late", BATCHED),
    Mutant("rollout-acc-sensors-after-the-repeat", "ssrl/envs/batched/backends.py",
           "record[..., self._acc_sensors] = rows[:, last][..., self._acc_sensors].swapaxes(0, 1)",
           "pass",
           "acceleration-stage sensors (touch, force, accelerometer) recorded one substep late", BATCHED),
    Mutant("lean-forward-despite-limit-sensors", "ssrl/envs/batched/backends.py",
           "self._lean_forward = not np.isin(model.sensor_type[before_acc], _CONSTRAINED_SENSORS).any()",
           "self._lean_forward = True",
           "the forward after a rollout skips constraints that a joint-limit sensor reads", BATCHED),
    Mutant("lean-forward-flags-left-set", "ssrl/envs/batched/backends.py",
           "        finally:\n            self._disableflags[:] = self.model.opt.disableflags",
           "        finally:\n            pass",
           "contacts and constraints stay disabled for the next rollout's stepping", BATCHED),
]


def check_snippets(mutants: list[Mutant]) -> None:
    """Every snippet must occur exactly once in its file (else the mutant would be ambiguous or stale)."""
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate mutant names")
    for m in mutants:
        count = (ROOT / m.file).read_text().count(m.original)
        if count != 1:
            raise SystemExit(f"mutant {m.name}: snippet found {count} times in {m.file} (need exactly 1):\n"
                             f"  {m.original!r}")
        if m.original == m.replacement:
            raise SystemExit(f"mutant {m.name}: replacement equals the original")


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    shutil.copytree(ROOT / "ssrl", dest / "ssrl", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def run_tests(tree: Path, tests: list[str], timeout: float) -> tuple[int, str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return -1, "timeout", time.perf_counter() - start


def first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return match.group(1) if match else output.strip().splitlines()[-1][:120] if output.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per pytest run")
    args = parser.parse_args()

    check_snippets(MUTANTS)
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:38s} {m.file:32s} {m.description}")
        return

    results, started = [], time.time()
    with tempfile.TemporaryDirectory(prefix="ssrl_mutants_") as tmp:
        base = Path(tmp) / "baseline"
        copy_tree(base)
        used = sorted({t for m in mutants for t in m.tests})
        rc, out, seconds = run_tests(base, used, args.timeout)
        print(f"baseline ({len(used)} test targets): {'pass' if rc == 0 else 'FAIL'} in {seconds:.1f}s", flush=True)
        if rc != 0:
            print(out[-4000:])
            raise SystemExit("the unmutated tests must pass before mutants mean anything")
        for m in mutants:
            tree = Path(tmp) / m.name
            copy_tree(tree)
            path = tree / m.file
            path.write_text(path.read_text().replace(m.original, m.replacement, 1))
            rc, out, seconds = run_tests(tree, m.tests, args.timeout)
            status = "survived" if rc == 0 else "timeout" if rc == -1 else "killed"
            killed_by = "" if rc == 0 else first_failure(out)
            results.append({**asdict(m), "status": status, "returncode": rc, "killed_by": killed_by,
                            "seconds": round(seconds, 1)})
            print(f"{m.name:38s} {status:8s} {seconds:5.1f}s  {killed_by}", flush=True)
            shutil.rmtree(tree)

    killed = sum(r["status"] == "killed" for r in results)
    print("\n| mutant | file | description | result | killed by |\n|---|---|---|---|---|")
    for r in results:
        description = r["description"].replace("|", "\\|")  # a markdown table cell
        print(f"| {r['name']} | {r['file']} | {description} | {r['status']} | `{r['killed_by']}` |")
    print(f"\n{killed}/{len(results)} killed in {time.time() - started:.0f}s")
    if not args.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        import torch

        RESULTS.write_text(json.dumps({
            "killed": killed, "total": len(results), "seconds": round(time.time() - started, 1),
            "python": platform.python_version(), "torch": torch.__version__, "mutants": results,
        }, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    if killed != len(results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
