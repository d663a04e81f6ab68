"""The fast update path computes what the straightforward one does: same augmentations, same losses and
gradients on a fixed batch with seeded augmentation, for every speed setting that claims to keep the maths.

The real ``torch.compile`` test compiles for minutes on a small CPU; it runs only with ``SSRL_TEST_COMPILE=1``.
The compile fallback (a compiler failure -> a warning and the eager module) always runs.
"""

import os
import platform
import resource
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssrl.agents import make_agent
from ssrl.agents.drqv2 import noisy
from ssrl.config import parse_overrides
from ssrl.data import ReplayBuffer
from ssrl.errors import ConfigError
from ssrl.nn.augment import RandomCrop, RandomShift

PIXELS = gym.spaces.Box(0, 255, (9, 32, 32), np.uint8)
ACTIONS = gym.spaces.Box(-1, 1, (2,), np.float32)
B = 8


def fixed_batch(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"obs": rng.integers(0, 256, (B, *PIXELS.shape), dtype=np.uint8),
            "next_obs": rng.integers(0, 256, (B, *PIXELS.shape), dtype=np.uint8),
            "action": rng.uniform(-1, 1, (B, 2)).astype(np.float32),
            "reward": rng.normal(size=B).astype(np.float32),
            "discount": np.full(B, 0.99, np.float32)}


class FixedReplay:
    def __init__(self) -> None:
        self.batch = fixed_batch()

    def sample(self, batch_size, n_step=None):
        return self.batch


def build(agent: str, *extra: str):
    cfg = parse_overrides([f"agent={agent}", "agent.hidden_dim=32", f"agent.batch_size={B}", "encoder.num_filters=8",
                           "encoder.num_layers=2", *extra])
    torch.manual_seed(0)
    return make_agent(cfg, PIXELS, ACTIONS, torch.device("cpu"))


# ------------------------------------------------------------------------------ straightforward references
def drqv2_shift(x: torch.Tensor, offsets: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """DrQ-v2's RandomShiftsAug (float replicate pad + bilinear grid_sample) at the given (dx, dy) offsets."""
    n, _, h, _w = x.shape
    x = F.pad(x.float(), (pad,) * 4, mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad)[:h]
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
    grid = base_grid + offsets.view(n, 1, 1, 2).float() * (2.0 / (h + 2 * pad))
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def numpy_crops(x: np.ndarray, top: np.ndarray, left: np.ndarray, size: int) -> np.ndarray:
    """CURL-style per-sample numpy crops."""
    return np.stack([img[:, t : t + size, u : u + size] for img, t, u in zip(x, top, left)])


def reference_update(agent, batch: dict[str, np.ndarray], kind: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One update written the straightforward way (float grid_sample shift, NCHW, full backward passes) on the
    agent's modules; returns the critic loss and every gradient, before any optimizer step."""
    obs, next_obs = torch.as_tensor(batch["obs"]), torch.as_tensor(batch["next_obs"])
    obs = drqv2_shift(obs.float(), torch.randint(0, 9, (B, 2)))
    next_obs = drqv2_shift(next_obs.float(), torch.randint(0, 9, (B, 2)))
    action, reward, discount = (torch.as_tensor(batch[k]) for k in ("action", "reward", "discount"))
    features = agent.encoder(obs)
    with torch.no_grad():
        target_encoder = agent.encoder_target if kind == "sac" else agent.encoder
        next_features = target_encoder(next_obs)
        if kind == "sac":
            next_action, log_prob = agent.actor(next_features)
            q1, q2 = agent.critic_target(next_features, next_action)
            value = torch.min(q1, q2) - agent.alpha * log_prob
        else:
            next_action = noisy(agent.actor(next_features), agent.stddev(0), agent.cfg.stddev_clip)
            value = torch.min(*agent.critic_target(next_features, next_action))
        target_q = reward[:, None] + discount[:, None] * value
    q1, q2 = agent.critic(features, action)
    critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
    critic_loss.backward()
    grads = {f"critic/{n}": p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}
    agent.critic_opt.step()  # the actor loss sees the updated critic
    agent.zero_grad(set_to_none=True)
    if kind == "sac":
        pi, log_prob = agent.actor(features.detach())
        actor_loss = (agent.alpha.detach() * log_prob - torch.min(*agent.critic(features.detach(), pi))).mean()
    else:
        pi = noisy(agent.actor(features.detach()), agent.stddev(0), agent.cfg.stddev_clip)
        actor_loss = -torch.min(*agent.critic(features.detach(), pi)).mean()
    actor_loss.backward()
    grads |= {f"actor/{n}": p.grad.clone() for n, p in agent.actor.named_parameters()}
    return critic_loss.detach(), grads


def record_gradients(agent) -> dict[str, torch.Tensor]:
    """Gradients each optimizer sees at its step, keyed like :func:`reference_update`'s."""
    names = {p: n for n, p in agent.named_parameters()}
    actor_names = {p: n for n, p in agent.actor.named_parameters()}
    seen: dict[str, torch.Tensor] = {}

    def hook(prefix, table):
        def pre_step(opt, *_):
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        seen[f"{prefix}/{table[p]}"] = p.grad.clone()
        return pre_step

    agent.critic_opt.register_step_pre_hook(hook("critic", names))
    agent.actor_opt.register_step_pre_hook(hook("actor", actor_names))
    return seen


# ------------------------------------------------------------------------------------------------- tests
def test_shift_is_drqv2_grid_sample_shift_as_a_uint8_gather():
    x = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    offsets = torch.randint(0, 9, (6, 2))
    fast = RandomShift(4).shift(x, offsets)
    assert fast.dtype == torch.uint8 and fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast.float(), drqv2_shift(x, offsets), atol=1e-3, rtol=0)
    torch.testing.assert_close(RandomShift(4).shift(x, torch.full((6, 2), 4)), x)  # centre offset: identity


def test_crop_matches_per_sample_numpy_crops():
    x = torch.randint(0, 256, (5, 3, 24, 24), dtype=torch.uint8)
    torch.manual_seed(3)
    fast = RandomCrop(8)(x)
    torch.manual_seed(3)
    top, left = torch.randint(0, 9, (5,)).numpy(), torch.randint(0, 9, (5,)).numpy()
    np.testing.assert_array_equal(fast.numpy(), numpy_crops(x.numpy(), top, left, 16))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("kind", ["sac", "drqv2"])
def test_update_gives_the_straightforward_losses_and_gradients(kind, channels_last):
    fast = build(kind, f"speed.channels_last={channels_last}")
    plain = build(kind, "speed.channels_last=false")
    assert all(p.is_contiguous(memory_format=torch.channels_last) == channels_last
               for p in fast.encoder.parameters() if p.dim() == 4)
    replay = FixedReplay()
    seen = record_gradients(fast)
    torch.manual_seed(1)
    metrics = fast.update(replay, frame=0)  # update 0 updates the critic and the actor
    torch.manual_seed(1)
    critic_loss, expected = reference_update(plain, replay.batch, kind)
    torch.testing.assert_close(metrics["critic_loss"], critic_loss, rtol=1e-5, atol=1e-6)
    assert seen.keys() == expected.keys()
    for key, grad in seen.items():
        torch.testing.assert_close(grad, expected[key], rtol=1e-4, atol=1e-6, msg=key)


def test_actor_backward_leaves_critic_gradients_alone():
    agent = build("sac")
    features = agent.encoder(agent.augment(torch.as_tensor(fixed_batch()["obs"]))).detach()
    agent.update_actor(features, frame=0)
    assert all(p.grad is None for p in agent.critic.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())


def test_prefetch_draws_the_same_batches_in_the_same_order():
    def run(prefetch: bool) -> list[float]:
        replay = ReplayBuffer(PIXELS, ACTIONS, 200, n_step=1, seed=0)
        rng = np.random.default_rng(0)
        replay.add_first(rng.integers(0, 256, PIXELS.shape, dtype=np.uint8))
        for i in range(60):
            replay.add(rng.uniform(-1, 1, 2).astype(np.float32), float(i), rng.integers(0, 256, PIXELS.shape,
                       dtype=np.uint8), terminated=False, truncated=i == 59)
        agent = build("drqv2", f"speed.prefetch={prefetch}")
        torch.manual_seed(1)
        losses = [float(agent.update(replay, frame=0)["critic_loss"]) for _ in range(3)]
        assert agent._prefetch is None or agent._prefetch.done()  # never sampling while the caller adds
        return losses

    assert run(True) == run(False)


def test_bf16_autocast_keeps_losses_finite_and_close():
    replay = FixedReplay()
    runs = {}
    for amp in ("none", "bf16"):
        agent = build("sac", f"speed.amp={amp}", "agent.augmentation=none")
        torch.manual_seed(1)
        runs[amp] = [agent.update(replay, frame=0) for _ in range(4)]
    for m16, m32 in zip(runs["bf16"], runs["none"]):
        assert all(torch.isfinite(v).all() for v in m16.values())
        torch.testing.assert_close(m16["critic_loss"], m32["critic_loss"], rtol=0.1, atol=0.05)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(fn, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    compiled = build("drqv2", "speed.compile=true")
    eager = build("drqv2")
    replay = FixedReplay()
    with pytest.warns(RuntimeWarning) as record:
        torch.manual_seed(1)
        got = compiled.update(replay, frame=0)
    messages = {str(w.message).split(" failed")[0] for w in record}
    assert messages == {f"torch.compile of {name}" for name in ("encoder", "critic", "critic_target", "actor")}
    assert all("no compiler here" in str(w.message) for w in record)
    torch.manual_seed(1)
    want = eager.update(replay, frame=0)
    torch.testing.assert_close(got["critic_loss"], want["critic_loss"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback is permanent: no second warning
        compiled.update(replay, frame=0)


@pytest.mark.skipif(os.environ.get("SSRL_TEST_COMPILE") != "1", reason="compiles for minutes; SSRL_TEST_COMPILE=1")
@pytest.mark.parametrize("kind", ["sac", "drqv2"])
def test_compiled_update_matches_eager(kind):
    import torch._inductor.config

    compiled, eager = build(kind, "speed.compile=true"), build(kind)
    replay = FixedReplay()
    # compiled code draws SAC's policy noise from inductor's own RNG unless told to use torch's
    with torch._inductor.config.patch(fallback_random=True):
        for _ in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # a fallback would make this test meaningless
                torch.manual_seed(1)
                got = compiled.update(replay, frame=0)
            torch.manual_seed(1)
            want = eager.update(replay, frame=0)
            torch.testing.assert_close(got["critic_loss"], want["critic_loss"], rtol=1e-4, atol=1e-5)


def test_speed_keys_are_checked():
    with pytest.raises(ConfigError, match="speed.amp='fp8'"):
        parse_overrides(["speed.amp=fp8"])
    with pytest.raises(ConfigError, match="no 'channel_last' in 'speed'"):
        parse_overrides(["speed.channel_last=true"])


def test_fused_adam_takes_the_default_adam_steps():
    from ssrl.nn.utils import adam

    torch.manual_seed(0)
    params = [torch.randn(64, 32, requires_grad=True), torch.randn(8, 3, 3, 3, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    fused, default = adam(params, lr=1e-3), torch.optim.Adam(twins, lr=1e-3)
    assert fused.defaults["fused"]
    for _ in range(3):
        for p, q in zip(params, twins):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        default.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_folded_normalisation_matches_normalising_the_pixels():
    """The encoder folds ``obs / 255 - 0.5`` into its first conv; features and gradients are unchanged."""
    from ssrl.config import EncoderConfig
    from ssrl.nn.encoders import PixelEncoder

    torch.manual_seed(0)
    encoder = PixelEncoder(PIXELS, EncoderConfig(num_filters=8, num_layers=2))
    obs = torch.randint(0, 256, (B, *PIXELS.shape), dtype=torch.uint8)
    encoder(obs).square().sum().backward()
    folded = {n: p.grad.clone() for n, p in encoder.named_parameters()}
    encoder.zero_grad()
    reference = encoder.head(encoder.convs(obs.float() / 255 - 0.5).flatten(1))
    reference.square().sum().backward()
    torch.testing.assert_close(encoder(obs), reference, rtol=1e-5, atol=1e-5)
    for name, p in encoder.named_parameters():
        torch.testing.assert_close(folded[name], p.grad, rtol=1e-4, atol=1e-4, msg=name)


FAULTS_OF_A_FRESH_TENSOR = """
import resource, sys, gymnasium as gym, torch
from ssrl.agents import make_agent
from ssrl.config import parse_overrides
box = gym.spaces.Box(-1, 1, (3,))
make_agent(parse_overrides([f"speed.keep_memory={sys.argv[1]}"]), box, box, torch.device("cpu"))  # applies it
def cycle():  # two 64 MB tensors, filled, then freed together (128 MB: more than glibc trims at by default)
    a, b = torch.empty(16 << 20).fill_(1.0), torch.empty(16 << 20).fill_(1.0)
for _ in range(5):  # warm-up: the heap grows to what the cycle needs
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_memory_reuses_freed_pages_for_large_tensors():
    """Ten cycles of two 64 MB tensors (allocated, filled, freed) page-fault all their pages afresh under glibc's
    defaults, and (after a warm-up) few do with ``speed.keep_memory`` (each in a fresh process: the setting is process-wide
    and the heap remembers)."""
    def faults(keep: str) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS_OF_A_FRESH_TENSOR, keep], capture_output=True, text=True,
                             check=True)
        return int(out.stdout.split()[-1])

    pages = 10 * (128 << 20) // resource.getpagesize()
    assert faults("false") > pages // 2
    assert faults("true") < pages // 5
