"""Representation losses against direct formulas: CURL's InfoNCE with bilinear logits q^T W k (vs
``F.cross_entropy(logits, arange(B))`` and a plain log-sum-exp loop), SPR's K-step cosine loss (normalised vectors,
2 - 2 cos per step, averaged over the batch and summed over the K steps), and the EMA target step
``target <- tau * online + (1 - tau) * target`` on hand values, and the collapse detector's effective rank
(Roy & Vetterli 2007) on matrices with known singular values."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssrl.config import CURLConfig, EncoderConfig, MaskedConfig, SPRConfig, WorldModelConfig
from ssrl.nn.encoders import make_encoder
from ssrl.nn.utils import soft_update
from ssrl.representations.base import collapse, effective_rank, feature_std, variance_covariance
from ssrl.representations.curl import CURL
from ssrl.representations.masked import Masked
from ssrl.representations.spr import SPR
from ssrl.representations.world_model import WorldModel

STATE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACTIONS = gym.spaces.Box(-1, 1, (2,), np.float32)
B, K = 12, 3


def encoder():
    torch.manual_seed(0)
    return make_encoder(STATE, EncoderConfig(feature_dim=8, state_hidden_dim=16))


class Views:
    """A deterministic 'augmentation' that gives each call its own view (obs + 0.3 * call index)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, obs):
        self.calls += 1
        return obs + 0.3 * self.calls


def perturb(module, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


# ---------------------------------------------------------------------------------------------- CURL
def test_curl_infonce_is_cross_entropy_over_bilinear_logits_with_the_diagonal_as_labels():
    enc = encoder()
    curl = CURL(enc, STATE, ACTIONS, CURLConfig())
    perturb(curl.key_encoder)  # a key encoder that is not the query encoder
    with torch.no_grad():
        curl.W.mul_(3.0)  # sharper logits: a wrong label or a missing W changes the loss a lot
    obs = torch.randn(B, 3)
    loss, metrics = curl.loss({"obs": obs}, enc, Views())

    with torch.no_grad():
        q = enc(obs + 0.3)  # the query's view (first call)
        k = curl.key_encoder(obs + 0.6)  # the key's view (second call)
        logits = q @ curl.W @ k.T  # (B, B): q_i^T W k_j
        stable = logits - logits.max(dim=1, keepdim=True).values
        expected = F.cross_entropy(stable, torch.arange(B))
        # the same by hand: -1/B sum_i [l_ii - log sum_j exp l_ij]
        rows = stable.double().tolist()
        by_hand = -sum(r[i] - math.log(sum(math.exp(x) for x in r)) for i, r in enumerate(rows)) / B
        accuracy = sum(max(range(B), key=lambda j, r=r: r[j]) == i for i, r in enumerate(rows)) / B
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx(accuracy)
    # the test tells the labels apart: all-zero labels or logits without W give other values
    assert float(F.cross_entropy(stable, torch.zeros(B, dtype=torch.long))) != pytest.approx(float(expected), rel=1e-2)
    assert float(F.cross_entropy(q @ k.T, torch.arange(B))) != pytest.approx(float(expected), rel=1e-2)


def test_curl_loss_gradient_reaches_w_and_the_query_encoder_only():
    enc = encoder()
    curl = CURL(enc, STATE, ACTIONS, CURLConfig())
    loss, _ = curl.loss({"obs": torch.randn(B, 3)}, enc, Views())
    loss.backward()
    assert curl.W.grad is not None and curl.W.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.parameters())
    assert all(p.grad is None for p in curl.key_encoder.parameters())


# ---------------------------------------------------------------------------------------------- SPR
def test_spr_loss_is_the_sum_over_k_of_the_batch_mean_of_2_minus_2_cos():
    enc = encoder()
    spr = SPR(enc, STATE, ACTIONS, SPRConfig(k=K, hidden_dim=16, projection_dim=8))
    perturb(spr.target_encoder), perturb(spr.target_projection, seed=2)
    obs, actions = torch.randn(B, K + 1, 3), torch.rand(B, K, 2) * 2 - 1
    identity = lambda x: x
    loss, metrics = spr.loss({"obs": obs, "action": actions}, enc, identity)

    with torch.no_grad():
        z = enc(obs[:, 0])
        latents = []
        for k in range(K):  # the action-conditioned rollout z_{k+1} = T(z_k, a_k)
            z = spr.transition(z, actions[:, k])
            latents.append(z)
        latents = torch.stack(latents, 1)  # (B, K, D)
        prediction = spr.prediction(spr.projection(latents.reshape(B * K, -1))).reshape(B, K, -1)
        target = spr.target_projection(spr.target_encoder(obs[:, 1:].reshape(B * K, 3))).reshape(B, K, -1)
        p = prediction / prediction.norm(dim=-1, keepdim=True)
        t = target / target.norm(dim=-1, keepdim=True)
        per_row = ((p - t) ** 2).sum(-1)  # ||p^ - t^||^2 = 2 - 2 cos
        expected = sum(per_row[:, k].mean() for k in range(K))
        cos1 = (p[:, 0] * t[:, 0]).sum(-1).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    assert float(metrics["cosine_step1"]) == pytest.approx(float(cos1), rel=1e-4, abs=1e-6)
    assert prediction.norm(dim=-1).sub(1).abs().max() > 0.1  # unnormalised outputs: normalisation matters


# ---------------------------------------------------------------------------------------------- world model
def vicreg_numpy(features: np.ndarray, target_std: float) -> tuple[float, float]:
    """VICReg's variance and covariance terms by numpy (unbiased covariance, as VICReg)."""
    std, cov = np.sqrt(features.var(0, ddof=1) + 1e-4), np.cov(features, rowvar=False)
    return np.maximum(0, target_std - std).mean(), ((cov ** 2).sum() - (np.diag(cov) ** 2).sum()) / features.shape[1]


def test_variance_covariance_terms_match_vicreg_by_hand_and_numpy():
    # two samples per dim: x = [[0, 0], [2, 0.02]]; unbiased var (2, 2e-4), std sqrt(var + 1e-4)
    x = torch.tensor([[0.0, 0.0], [2.0, 0.02]], dtype=torch.float64)
    variance, covariance = variance_covariance(x, target_std=1.0)
    assert float(variance) == pytest.approx((0.0 + (1 - math.sqrt(3e-4))) / 2, rel=1e-12)  # dim 0 above target
    # cov_01 = sum (x0 - mean0)(x1 - mean1) / (n - 1) = (-1)(-0.01) + (1)(0.01) = 0.02; off-diagonal twice, / d
    assert float(covariance) == pytest.approx(2 * 0.02 ** 2 / 2, rel=1e-12)
    z = torch.randn(37, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64)
    expected_variance, expected_covariance = vicreg_numpy(z.numpy(), 2.0)
    variance, covariance = variance_covariance(z, target_std=2.0)
    assert float(variance) == pytest.approx(expected_variance, rel=1e-10)
    assert float(covariance) == pytest.approx(expected_covariance, rel=1e-10)


def test_world_model_loss_is_discounted_consistency_and_reward_plus_variance_and_covariance():
    enc = encoder()
    cfg = WorldModelConfig(k=K, hidden_dim=16, rho=0.7, consistency_coef=2.0, reward_coef=0.5, variance_coef=3.0,
                           covariance_coef=0.1, variance_target=0.9)
    model = WorldModel(enc, STATE, ACTIONS, cfg)
    perturb(model.target_encoder)
    obs, actions, rewards = torch.randn(B, K + 1, 3), torch.rand(B, K, 2) * 2 - 1, torch.randn(B, K)
    loss, metrics = model.loss({"obs": obs, "action": actions, "reward": rewards}, enc, lambda x: x)

    with torch.no_grad():
        z0 = enc(obs[:, 0])
        z, consistency, reward = z0, 0.0, 0.0
        for k in range(K):  # reward from (z_k, a_k), then z_{k+1} = d(z_k, a_k) against the target's encoding
            r = model.reward(torch.cat([z, actions[:, k]], -1)).squeeze(-1)
            reward += 0.7 ** k * ((r - rewards[:, k]) ** 2).mean()
            z = model.dynamics(z, actions[:, k])
            consistency += 0.7 ** k * ((z - model.target_encoder(obs[:, k + 1])) ** 2).mean()
        variance, covariance = vicreg_numpy(z0.double().numpy(), 0.9)
    expected = 2.0 * float(consistency) + 0.5 * float(reward) + 3.0 * variance + 0.1 * covariance
    assert variance > 0.05 and covariance > 1e-3  # both terms act on this batch, so dropping either shows
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["variance"]) == pytest.approx(variance, rel=1e-5)
    assert float(metrics["covariance"]) == pytest.approx(covariance, rel=1e-5)


def test_masked_loss_adds_vicreg_terms_on_the_online_latents_of_the_masked_inputs():
    """The same masks (same RNG) with the terms on and off: the losses differ by the weighted terms of the
    encoder's output on the masked sequence, and so do the gradients reaching that output (the terms train the
    encoder, not a detached copy)."""
    enc = encoder()
    on = Masked(enc, STATE, ACTIONS, MaskedConfig(k=K, mask_space="input", hidden_dim=16, heads=2, variance_coef=3.0,
                                                  covariance_coef=0.1, variance_target=0.9))
    off = copy.deepcopy(on)
    off.cfg = replace(on.cfg, variance_coef=0.0, covariance_coef=0.0)
    latents = []
    enc.register_forward_hook(lambda module, inputs, out: latents.append(out) or out.retain_grad())
    batch = {"obs": torch.randn(B, K + 1, 3), "action": torch.rand(B, K, 2) * 2 - 1}
    losses = []
    for model in (on, off):
        torch.manual_seed(5)
        loss, metrics = model.loss(batch, enc, lambda x: x)
        loss.backward()
        losses.append(float(loss.detach()))
    (z_on, z_off), masked = latents, on.mask(batch["obs"])[1]["obs"]
    assert masked.any() and torch.equal(z_on, z_off)  # same masked inputs, same latents
    variance, covariance = vicreg_numpy(z_on.detach().double().numpy(), 0.9)
    assert variance > 0.05 and covariance > 1e-3  # both terms act on this batch, so dropping either shows
    assert losses[0] - losses[1] == pytest.approx(3.0 * variance + 0.1 * covariance, rel=1e-4)
    leaf = z_on.detach().double().requires_grad_()
    terms = variance_covariance(leaf, 0.9)
    (3.0 * terms[0] + 0.1 * terms[1]).backward()
    torch.testing.assert_close((z_on.grad - z_off.grad).double(), leaf.grad, rtol=1e-4, atol=1e-7)


def test_latent_masking_matches_a_per_sample_loop_over_visible_and_masked_observations():
    """``mask_space=latent`` against a plain loop: which observations were masked is read from what each encoder
    saw (the online encoder only visible ones, the target encoder only masked ones, ``hidden_steps`` per
    sequence); then per sample, the visible observations' tokens and the mask token at the masked steps, plus
    action and position, go through the transformer; its outputs at the masked steps must match (2 - 2 cos) the
    target projection of the target encoder. Loss and encoder gradients must agree. k=3 with 2 of 4 masked, so
    a mutant that swaps visible and masked rows keeps its shapes and fails on the values."""
    pixels = gym.spaces.Box(0, 255, (3, 16, 16), np.uint8)
    torch.manual_seed(0)
    enc = make_encoder(pixels, EncoderConfig(feature_dim=8, num_filters=4, num_layers=1))
    model = Masked(enc, pixels, ACTIONS, MaskedConfig(k=K, mask_space="latent", mask_ratio=0.5, hidden_dim=16,
                                                      heads=2, projection_dim=8))
    perturb(model.target_encoder), perturb(model.target_projection, seed=2)  # targets that are not the online nets
    obs = torch.randint(0, 256, (B, K + 1, 3, 16, 16), dtype=torch.uint8)
    actions = torch.rand(B, K, 2) * 2 - 1
    seen = {}

    def note(name):  # the first input each encoder sees (the loss's call)
        return lambda module, inputs, out: None if name in seen else seen.update({name: inputs[0]})

    enc.register_forward_hook(note("online"))
    model.target_encoder.register_forward_hook(note("target"))
    loss, metrics = model.loss({"obs": obs, "action": actions}, enc, lambda x: x)
    loss.backward()
    grads = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()

    def rows_in(frames):
        return torch.tensor([[any(torch.equal(obs[b, t], f) for f in frames) for t in range(K + 1)] for b in range(B)])

    hidden, visible = rows_in(seen["target"]), rows_in(seen["online"])
    assert torch.equal(hidden, ~visible) and (hidden.sum(1) == 2).all()
    outputs, targets = [], []
    for b in range(B):
        tokens = []
        for t in range(K + 1):
            token = model.mask_token if hidden[b, t] else model.token(enc(obs[b, t][None]))[0]
            action = actions[b, t] if t < K else torch.zeros(2)
            tokens.append(token + model.action_token(action) + model.position[0, t])
        out = model.transformer(torch.stack(tokens)[None])[0]
        for t in range(K + 1):
            if hidden[b, t]:
                outputs.append(out[t])
                with torch.no_grad():
                    targets.append(model.target_encoder(obs[b, t][None])[0])
    prediction = model.prediction(model.projection(model.latent_head(torch.stack(outputs))))
    with torch.no_grad():
        target = model.target_projection(torch.stack(targets))
    p, q = prediction.detach().double().numpy(), target.double().numpy()
    cosines = (p * q).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(q, axis=1)
    assert float(loss.detach()) == pytest.approx(float(np.mean(2 - 2 * cosines)), rel=1e-5)
    reference = (2 - 2 * F.cosine_similarity(prediction, target, dim=-1)).mean()
    reference.backward()
    for got, want in zip(grads, [p.grad for p in enc.parameters()]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------- EMA
def fill(module, value):
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_soft_update_hand_values():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    fill(online, 1.0), fill(target, 0.0)
    soft_update(target, online, 0.1)
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in target.parameters())
    soft_update(target, online, 0.1)  # 0.1 * 1 + 0.9 * 0.1
    assert all(torch.allclose(p, torch.full_like(p, 0.19)) for p in target.parameters())
    assert all(torch.equal(p, torch.ones_like(p)) for p in online.parameters())


def test_curl_and_spr_targets_move_by_tau_toward_the_online_networks():
    enc = encoder()
    curl = CURL(enc, STATE, ACTIONS, CURLConfig(tau=0.05))
    fill(enc, 2.0), fill(curl.key_encoder, 0.0)
    curl.update_targets(enc)
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in curl.key_encoder.parameters())

    spr = SPR(enc, STATE, ACTIONS, SPRConfig(k=K, tau=0.25, hidden_dim=16, projection_dim=8))
    fill(spr.target_encoder, -2.0), fill(spr.projection, 4.0), fill(spr.target_projection, 0.0)
    spr.update_targets(enc)
    assert all(torch.allclose(p, torch.full_like(p, 0.25 * 2.0 + 0.75 * -2.0)) for p in spr.target_encoder.parameters())
    assert all(torch.allclose(p, torch.full_like(p, 1.0)) for p in spr.target_projection.parameters())


# ------------------------------------------------------------------------------------- collapse detector
def with_singular_values(values, n=40, d=8, seed=0):
    """An ``(n, d)`` matrix ``U diag(values) V^T`` with random orthonormal ``U``, ``V``."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    s = torch.zeros(d, dtype=torch.float64)
    s[: len(values)] = torch.tensor(values, dtype=torch.float64)
    return u @ torch.diag(s) @ v.T


def test_effective_rank_is_exp_entropy_of_normalised_singular_values():
    # singular values (4, 2, 1, 1): p = (1/2, 1/4, 1/8, 1/8), H = 1/2 ln 2 + 1/4 ln 4 + 2/8 ln 8 = 1.75 ln 2
    assert float(effective_rank(with_singular_values([4.0, 2.0, 1.0, 1.0]))) == pytest.approx(2 ** 1.75, rel=1e-9)
    for r in (1, 3, 8):  # r equal nonzero singular values: rank r, whatever their size
        assert float(effective_rank(with_singular_values([2.5] * r)) ) == pytest.approx(r, rel=1e-9)
    assert float(effective_rank(torch.zeros(5, 3))) == 0.0
    x = torch.randn(30, 6, dtype=torch.float64)  # invariant to scale and to rotations of the feature space
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert float(effective_rank(7 * x @ q)) == pytest.approx(float(effective_rank(x)), rel=1e-9)


def test_collapse_detector_names_what_collapsed():
    healthy = torch.randn(64, 50).tanh()
    assert collapse(healthy) == [] and float(feature_std(healthy)) == pytest.approx(float(healthy.std(0).mean()))
    one_point = torch.ones(64, 1) * torch.randn(1, 50)  # every input the same feature vector
    assert len(collapse(one_point)) == 2
    line = torch.randn(64, 1) @ torch.randn(1, 50)  # spread out, but along one direction
    reasons = collapse(line)
    assert len(reasons) == 1 and "effective rank" in reasons[0]
