"""Representation modules: config, losses fall, gradients reach exactly the right parameters, targets move only
by EMA, the intrinsic-reward seam, end-to-end `ssrl train` with SAC and DrQ-v2, a linear probe that shows
pretraining learns the physics for every module, and a collapse detector that fails a collapsed one."""

import copy
import csv

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.agents import make_agent
from ssrl.config import parse_overrides
from ssrl.data import to_torch
from ssrl.errors import ConfigError
from ssrl.eval.probe import collect, features, pretrain, probe_r2
from ssrl.experiments.offpolicy import Trainer
from ssrl.representations.base import MIN_FEATURE_STD, collapse, effective_rank, feature_std, health
from ssrl.representations.curl import CURL
from ssrl.representations.masked import cube_mask

PIXELS = gym.spaces.Box(0, 255, (9, 32, 32), np.uint8)
STATE = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACTIONS = gym.spaces.Box(-1, 1, (2,), np.float32)
SPACES = {"pixels": PIXELS, "state": STATE, "pixels+state": gym.spaces.Dict({"pixels": PIXELS, "state": STATE})}
MODULES = ["curl", "spr", "masked", "world_model"]
HEADS = {"spr": "representation.inverse_coef=1", "world_model": "representation.decoder_coef=1"}  # optional heads on
B, K = 16, 5
INPUT = "representation.mask_space=input"  # masked's second path: masks on the inputs (pixel cubes, state entries)


class FixedReplay:
    """Always the same transitions and the same sequences: lets a test watch a loss fall."""

    def __init__(self, space: gym.Space, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        mixing = rng.normal(size=(2, STATE.shape[0]))

        def draw(sp, lead):
            if isinstance(sp, gym.spaces.Dict):
                return {k: draw(s, lead) for k, s in sp.spaces.items()}
            if sp.dtype == np.uint8:
                return rng.integers(0, 256, (*lead, *sp.shape), dtype=np.uint8)
            # states on a 2-d subspace: masked entries are predictable from the unmasked ones
            return (rng.normal(size=(*lead, 2)) @ mixing).astype(np.float32)

        self.batch = {"obs": draw(space, (B,)), "next_obs": draw(space, (B,)),
                      "action": rng.uniform(-1, 1, (B, 2)).astype(np.float32),
                      "reward": rng.normal(size=B).astype(np.float32), "discount": np.full(B, 0.99, np.float32)}
        self.sequences = {"obs": draw(space, (B, K + 1)), "action": rng.uniform(-1, 1, (B, K, 2)).astype(np.float32),
                          "reward": rng.normal(size=(B, K)).astype(np.float32), "terminated": np.zeros((B, K), bool)}

    def sample(self, batch_size, n_step=None):
        return self.batch

    def sample_sequences(self, batch_size, length):
        obs = self.sequences["obs"]
        cut = {k: v[:, : length + 1] for k, v in obs.items()} if isinstance(obs, dict) else obs[:, : length + 1]
        return {"obs": cut, **{k: v[:, :length] for k, v in self.sequences.items() if k != "obs"}}


def build(representation, space=PIXELS, *extra, agent="sac"):
    cfg = parse_overrides([f"agent={agent}", "agent.hidden_dim=32", f"agent.batch_size={B}", "encoder.num_filters=8",
                           "encoder.num_layers=2", f"representation={representation}", "representation.k=3"
                           if representation != "curl" else "representation.weight=1", *extra])
    torch.manual_seed(0)
    return make_agent(cfg, space, ACTIONS, torch.device("cpu"))


def repr_step(agent, replay):
    return agent.update_representation(to_torch(replay.batch, "cpu"), replay)


# ------------------------------------------------------------------------------------------------- config
def test_config_selects_modules_and_rejects_unknown_or_bad_keys():
    cfg = parse_overrides(["representation=masked", "representation.k=5", "representation.mask_ratio=0.5",
                           "representation.weight=0.5", "representation.lr=3e-4"])
    assert (cfg.representation.k, cfg.representation.mask_ratio, cfg.representation.weight) == (5, 0.5, 0.5)
    assert parse_overrides(["representation=curl"]).representation.tau == 0.05  # CURL's key-encoder momentum
    with pytest.raises(ConfigError, match="representation.k"):
        parse_overrides(["representation=curl", "representation.k=5"])
    with pytest.raises(ConfigError, match="unknown representation 'cur'"):
        parse_overrides(["representation=cur"])
    with pytest.raises(ConfigError, match=r"representation.mask_ratio=1.5"):
        build("masked", PIXELS, "representation.mask_ratio=1.5")
    with pytest.raises(ConfigError, match=r"representation.mask_space='pixels': choose one of input, latent"):
        parse_overrides(["representation=masked", "representation.mask_space=pixels"])
    with pytest.raises(ConfigError, match="agent.n_step=1"):
        build("world_model", PIXELS, "representation.intrinsic_coef=0.1", agent="drqv2")  # DrQ-v2: n_step=3


# -------------------------------------------------------------------------------------------- behaviour
# dict observations change the code path only for `masked` (both losses) and `world_model` (a decoder per key)
@pytest.mark.parametrize("module,obs,extra", [(m, o, "") for m in MODULES for o in SPACES
                                              if o != "pixels+state" or m in ("masked", "world_model")]
                         + [("masked", o, INPUT) for o in SPACES])
def test_loss_falls_on_a_fixed_dataset(module, obs, extra):
    """Wiring, not learning: the module's optimizer lowers its loss on one fixed batch of noise (gradients flow,
    the step applies them). A network can memorise 16 noise images, so this shows nothing about representations;
    the linear physics probe below does."""
    agent = build(module, SPACES[obs], "agent.augmentation=none", HEADS.get(module, "representation.lr=1e-3"),
                  *filter(None, [extra]))
    replay = FixedReplay(SPACES[obs])
    losses = [float(repr_step(agent, replay)["repr_loss"]) for _ in range(25)]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("module,obs,extra", [(m, o, "") for m in MODULES for o in ("pixels", "pixels+state")]
                         + [("masked", "state", ""), ("masked", "pixels", INPUT), ("masked", "pixels+state", INPUT)])
def test_gradients_reach_exactly_the_encoder_and_the_modules_heads(module, obs, extra):
    agent = build(module, SPACES[obs], HEADS.get(module, "agent.lr=1e-3"), *filter(None, [extra]))
    rep, replay = agent.representation, FixedReplay(SPACES[obs])
    batch = to_torch(replay.batch if rep.sequence_length == 0 else replay.sample_sequences(B, rep.sequence_length), "cpu")
    loss, metrics = rep.loss(batch, agent.encoder, agent.augment)
    loss.backward()
    trainable = [p for p in rep.parameters() if p.requires_grad]
    frozen = [p for p in rep.parameters() if not p.requires_grad]
    assert trainable and frozen  # heads, and EMA targets
    assert all(p.grad is not None for p in trainable)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.encoder.parameters())
    assert all(p.grad is None for p in frozen)
    for part in (agent.actor, agent.critic, agent.critic_target):
        assert all(p.grad is None for p in part.parameters())
    # the encoder's own parameters are the agent's, never the module's
    assert not {id(p) for p in agent.encoder.parameters()} & {id(p) for p in rep.parameters()}
    assert {"feature_std", "target_cosine"} <= metrics.keys()
    assert all(torch.isfinite(v) and v.ndim == 0 for v in metrics.values())


@pytest.mark.parametrize("module", MODULES)
def test_trains_encoder_false_leaves_the_encoder_and_trains_only_the_heads(module):
    agent = build(module, PIXELS, "representation.trains_encoder=false")
    assert not agent.representation.trains_encoder
    assert {id(p) for p in agent.repr_opt.param_groups[0]["params"]} == {id(p) for p in agent.representation.parameters()}
    encoder = [p.clone() for p in agent.encoder.parameters()]
    heads = [p.clone() for p in agent.representation.parameters() if p.requires_grad]
    repr_step(agent, FixedReplay(PIXELS))
    assert all(torch.equal(a, b) for a, b in zip(encoder, agent.encoder.parameters()))
    assert all(p.grad is None for p in agent.encoder.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(heads, [p for p in agent.representation.parameters() if p.requires_grad])]
    assert all(moved), moved


@pytest.mark.parametrize("module", MODULES)
def test_targets_move_only_by_their_ema(module):
    agent = build(module, PIXELS, "representation.tau=0.1")
    pairs = agent.representation.ema_pairs(agent.encoder)
    assert pairs
    before = [[p.clone() for p in target.parameters()] for target, _ in pairs]
    online_before = [p.clone() for p in agent.encoder.parameters()]
    repr_step(agent, FixedReplay(PIXELS))
    assert any(not torch.equal(a, b) for a, b in zip(online_before, agent.encoder.parameters()))
    for (target, online), old in zip(pairs, before):
        assert all(not p.requires_grad for p in target.parameters())
        for t0, t1, o1 in zip(old, target.parameters(), online.parameters()):
            torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * o1)  # EMA of the weights after this step
    # the critic's update never moves the module's targets
    frozen = [[p.clone() for p in target.parameters()] for target, _ in pairs]
    agent.update_critic(agent.encoder(agent.augment(torch.as_tensor(FixedReplay(PIXELS).batch["obs"]))),
                        torch.zeros(B, 2), torch.zeros(B), torch.ones(B),
                        agent.augment(torch.as_tensor(FixedReplay(PIXELS).batch["next_obs"])), frame=0)
    for (target, _), old in zip(pairs, frozen):
        assert all(torch.equal(a, b) for a, b in zip(old, target.parameters()))


def test_masked_state_modality_reconstructs_masked_entries_only_and_cubes_are_cubes():
    agent = build("masked", STATE, INPUT, "representation.step_mask_ratio=0.5")
    assert agent.representation.ema_pairs(agent.encoder) == []  # states: explicit reconstruction, no momentum target
    seq = to_torch(FixedReplay(STATE).sample_sequences(B, 3), "cpu")
    torch.manual_seed(0)
    masked, masks = agent.representation.mask(seq["obs"])
    m = masks["obs"]
    assert torch.equal(masked["obs"][m], torch.zeros(int(m.sum())))
    assert torch.equal(masked["obs"][~m], seq["obs"][~m])
    assert m.all(-1).any()  # whole time steps are masked too
    mask = cube_mask((64, 4, 32, 32), 0.5, cube_time=2, cube_size=8, device=torch.device("cpu"))
    assert abs(float(mask.float().mean()) - 0.5) < 0.05
    cubes = mask.unflatten(1, (2, 2)).unflatten(3, (4, 8)).unflatten(5, (4, 8))  # (B, 2, 2, 4, 8, 4, 8)
    assert torch.equal(cubes.amax((2, 4, 6)), cubes.amin((2, 4, 6)))  # constant inside every cube


def test_masked_pixels_hide_each_frame_in_every_stacked_observation_that_holds_it():
    """A 3-frame stack shares frames with its neighbours (obs t holds frames t-2..t): a frame masked in one
    observation must be masked wherever it appears, or the transformer could copy it from the next step."""
    agent = build("masked", PIXELS, INPUT, "representation.mask_ratio=0.5")
    frames = torch.arange(1.0, 7.0)[:, None, None, None].expand(6, 3, *PIXELS.shape[1:])  # frame f filled with f+1
    obs = torch.stack([frames[t : t + 3].flatten(0, 1) for t in range(4)])[None].repeat(8, 1, 1, 1, 1)
    torch.manual_seed(0)
    masked, masks = agent.representation.mask(obs)
    m = masks["obs"]  # (8, 4, 9, H, W)
    assert torch.equal(masked["obs"], obs * ~m)
    for f in range(6):  # frame f sits in obs t's channels 3(f-t)..3(f-t)+2
        views = [m[:, t, 3 * (f - t) : 3 * (f - t) + 3] for t in range(4) if 0 <= f - t < 3]
        assert all(torch.equal(v, views[0]) for v in views), f"frame {f} masked differently across the stacks"
        assert torch.equal(views[0].amax(1), views[0].amin(1))  # the same pixels in all 3 colour channels
    assert 0.3 < float(m.float().mean()) < 0.7


def test_world_model_curiosity_bonus_is_its_prediction_error_and_reaches_the_reward():
    agent = build("world_model", PIXELS, "representation.intrinsic_coef=0.5")
    replay = FixedReplay(PIXELS)
    batch = to_torch(replay.batch, "cpu")
    rep = agent.representation
    error = rep.prediction_error(batch["obs"], batch["action"], batch["next_obs"], agent.augment)
    torch.testing.assert_close(rep.intrinsic_reward(batch, agent.augment), 0.5 * error)
    metrics = agent.update(replay, frame=0)
    assert float(metrics["intrinsic_reward"]) > 0
    plain = build("world_model", PIXELS)
    assert plain.representation.intrinsic_reward(batch, plain.augment) is None
    assert "intrinsic_reward" not in plain.update(replay, frame=0)


@pytest.mark.parametrize("module", ["curl", "world_model"])
def test_checkpoint_round_trip_restores_heads_targets_and_optimizer(module):
    replay = FixedReplay(PIXELS)
    a = build(module)
    for _ in range(2):
        a.update(replay, frame=0)
    b = build(module)
    b.restore(copy.deepcopy(a.checkpoint()))  # as through torch.save: no tensors shared with `a`
    torch.manual_seed(1)
    ma = a.update(replay, frame=0)
    torch.manual_seed(1)
    mb = b.update(replay, frame=0)
    assert float(ma["repr_loss"]) == float(mb["repr_loss"])
    for (ta, _), (tb, _) in zip(a.representation.ema_pairs(a.encoder), b.representation.ema_pairs(b.encoder)):
        assert all(torch.equal(x, y) for x, y in zip(ta.parameters(), tb.parameters()))


@pytest.mark.parametrize("module", MODULES)
def test_step_trains_the_encoder_it_is_given_and_its_targets_follow_that_one(module):
    """The module keeps no encoder of its own: `step` trains the encoder passed in (not the agent's), and the EMA
    target copy of the encoder moves towards it."""
    agent = build(module, PIXELS, "representation.tau=0.1")
    rep, other, replay = agent.representation, copy.deepcopy(agent.encoder), FixedReplay(PIXELS)
    k = rep.sequence_length
    batch = to_torch(replay.sample_sequences(B, k) if k else replay.batch, "cpu")
    target = rep.key_encoder if module == "curl" else rep.target_encoder
    agent_before, other_before = [p.clone() for p in agent.encoder.parameters()], [p.clone() for p in other.parameters()]
    target_before = [p.clone() for p in target.parameters()]
    rep.step(batch, other, agent.augment, torch.optim.SGD(rep.trainable_parameters(other), lr=0.1), 1.0)
    assert all(torch.equal(a, b) for a, b in zip(agent_before, agent.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(other_before, other.parameters()))
    for t0, t1, o1 in zip(target_before, target.parameters(), other.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * o1)


# Layers of the modules' state_dicts in existing run directories' checkpoints (besides the encoder's EMA copy):
# renaming one breaks their resume.
STATE_LAYERS = {
    "curl": "key_encoder W",
    "spr": "target_encoder inverse.0 inverse.2 prediction projection.0 projection.1 projection.3 target_projection.0 "
           "target_projection.1 target_projection.3 transition.net.0.0 transition.net.0.2 transition.net.1",
    "world_model": "target_encoder decoder.heads.obs.deconv.1 decoder.heads.obs.deconv.3 decoder.heads.obs.fc "
                   "dynamics.net.0.0 dynamics.net.0.2 dynamics.net.1 reward.0 reward.2",
}


@pytest.mark.parametrize("module", list(STATE_LAYERS))
def test_state_dict_keys_are_those_of_existing_checkpoints(module):
    agent = build(module, PIXELS, *[HEADS[module]] if module in HEADS else [])
    copy_name, *layers = STATE_LAYERS[module].split()
    encoder_keys = {f"{copy_name}.{k}" for k in agent.encoder.state_dict()}
    keys = set(agent.representation.state_dict()) - encoder_keys
    assert encoder_keys <= set(agent.representation.state_dict())
    assert {key.rpartition(".")[0] or key for key in keys} == set(layers)


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("agent", ["sac", "drqv2"])
@pytest.mark.parametrize("module", MODULES)
def test_short_ssrl_train_logs_representation_metrics(tmp_path, module, agent):
    cfg = parse_overrides([
        "env=dmc/cartpole-swingup", "obs=pixels", "size=32", "action_repeat=50", "frames=1000", "seed_frames=500",
        "eval_episodes=1", "eval_every=100000", "progress=false", f"run_dir={tmp_path}", f"agent={agent}",
        "agent.batch_size=8", "agent.hidden_dim=32", "agent.update_every=2", "encoder.num_filters=8",
        "encoder.num_layers=2", f"representation={module}", *(["representation.k=3"] if module != "curl" else []),
    ])
    Trainer(cfg).train()
    rows = list(csv.DictReader((tmp_path / "train.csv").open()))
    trained = [r for r in rows if r.get("repr_loss")]
    assert trained and all(np.isfinite(float(r["repr_loss"])) for r in trained)
    # the critic's loss trains the encoder too, so its features must not look collapsed (std 0.001-0.009 when
    # they do, against 0.08 or more for a healthy or random encoder; `ssrl.representations.base.collapse`)
    assert float(trained[-1]["repr_feature_std"]) >= MIN_FEATURE_STD


# ------------------------------------------------------------------------------------------------ probe
PROBE_EPISODES = 8  # random-policy episodes of dmc/cartpole-swingup at 32x32 (1008 frames, ~3 s to render)
# CI-sized pretraining per module: gradient steps and the (shorter) sequence length that keeps it within ~10 s
PROBE_RUNS = {"curl": (600, []), "spr": (600, ["representation.k=3"]), "masked": (400, []),
              "world_model": (600, ["representation.k=3"]),
              "masked-input": (400, [INPUT, "representation.k=2", "representation.mask_ratio=0.5"])}
PROBE_MARGIN = 0.02  # R^2 the pretrained encoder must gain over the same encoder at init (measured: >= 0.029)


@pytest.fixture(scope="module")
def probe_data():
    """Real rendered frames with their physics state, shared by every module's probe test."""
    torch.set_num_threads(1)
    return collect("dmc/cartpole-swingup", episodes=PROBE_EPISODES, size=32)


def probe_agent(module, data, seed=0, *extra):
    steps, overrides = PROBE_RUNS.get(module, (0, []))
    cfg = parse_overrides(["agent.batch_size=32", "encoder.num_filters=8", "encoder.num_layers=2",
                           f"representation={module.removesuffix('-input')}", *overrides, *extra])
    torch.manual_seed(seed)
    data.replay.seed(seed)
    return make_agent(cfg, data.observation_space, data.action_space, torch.device("cpu")), steps


def frozen_features(agent, data):
    return torch.from_numpy(features(agent.encoder, agent.augment, data.obs))


@pytest.mark.parametrize("module", [*MODULES, "masked-input"])
def test_pretrained_encoder_beats_random_init_on_a_linear_physics_probe_and_does_not_collapse(module, probe_data):
    """Learning, not memorisation: each module's objective alone (``pretrain_step``, the step of ``ssrl pretrain``)
    trains the encoder on 1008 random-policy cartpole-swingup frames (8 episodes, 32x32, 3-frame stacks, batch 32,
    8-filter 2-layer encoder, lr 1e-3); a ridge probe from the frozen features to the state (cart position, pole
    cos/sin, both velocities), scored by leave-one-episode-out cross-validation (R^2 of the out-of-fold predictions
    averaged over the 5 dims), must beat the same encoder at its (random) init by ``PROBE_MARGIN``, and the
    features must pass the collapse detector.

    Measured (seeds 0, 1, 2: init and batch order; 1 thread on a loaded 2-core CPU; mean +- std over seeds):

    =============  =====  ===========  =============  ===========================  ===========
    module         steps  random R^2   trained R^2    gain per seed (0, 1, 2)      s per run
    =============  =====  ===========  =============  ===========================  ===========
    curl           600    0.061+-.032  0.240+-.034    +0.100 +0.219 +0.219         5
    spr (k=3)      600    0.061+-.032  0.150+-.067    +0.120 +0.039 +0.109         9
    masked         400    0.061+-.032  0.152+-.075    +0.129 +0.029 +0.115         14
    (latent, k=4)
    world_model    600    0.061+-.032  0.238+-.020    +0.140 +0.197 +0.193         10
    (k=3)
    masked-input   400    0.061+-.032  0.177+-.009    +0.068 +0.168 +0.113         10
    (k=2, 0.5)
    =============  =====  ===========  =============  ===========================  ===========

    The test runs seed 0; the margin (0.02) is under half the smallest gain over all seeds (+0.039, SPR seed 1)
    but for masked's seed 1 (+0.029; +0.030 with 600 steps), whose init scores lowest (0.020).
    Positions carry the gain (cart position R^2 0.7-0.9, pole cosine 0.3-0.6 after pretraining); velocities from a
    3-frame stack stay near 0 for every module at this scale. Input masking only beats random with its BatchNorm
    projector: with the old Linear-ReLU-Linear projection it collapsed (loss -> 0.01, gains -0.034 +0.038
    +0.088, seed 1's features std 0.009 and effective rank 1.7). With its optional VICReg terms
    (``representation.variance_coef=1 representation.covariance_coef=0.04``) the gains are +0.056 +0.135 +0.055."""
    agent, steps = probe_agent(module, probe_data)
    random_r2 = probe_r2(agent.encoder, agent.augment, probe_data, folds=PROBE_EPISODES)
    losses = pretrain(agent, probe_data.replay, updates=steps)
    trained_r2 = probe_r2(agent.encoder, agent.augment, probe_data, folds=PROBE_EPISODES)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    assert trained_r2 > random_r2 + PROBE_MARGIN, (random_r2, trained_r2)
    x = frozen_features(agent, probe_data)
    assert collapse(x) == [], (float(feature_std(x)), float(effective_rank(x)))


def test_world_model_trained_reward_free_keeps_its_latent_spread_by_the_vicreg_terms(probe_data):
    """Reward-free data (every reward 0: the reward head cannot tell observations apart) leaves the latent
    consistency loss a trivial minimum, one constant latent; the VICReg variance and covariance terms on the online
    latents rule it out. Seed 1, 600 steps (k=3) on the probe frames with rewards zeroed. Measured (seeds 0, 1, 2):

    ====================  ==================  ==================  ==========================================
    variance/covariance   feature std         effective rank      probe gain over init
    ====================  ==================  ==================  ==========================================
    defaults (1.0, 0.04)  0.538 0.525 0.536   32.2 28.7 35.1      +0.167 +0.176 +0.140
    off (0, 0)            0.247 0.009 0.013   14.0 1.7 2.0        +0.083 +0.006 +0.017 (seeds 1, 2 collapse)
    ====================  ==================  ==================  ==========================================

    The same collapse hit world_model in 2 of 3 seeds on finger-spin's reward-free data (docs/representations.md)."""
    free = copy.deepcopy(probe_data)
    free.replay._reward[:] = 0.0
    for vicreg, healthy in ((["representation.variance_coef=0", "representation.covariance_coef=0"], False),
                            ([], True)):
        agent, steps = probe_agent("world_model", free, 1, *vicreg)
        random_r2 = probe_r2(agent.encoder, agent.augment, free, folds=PROBE_EPISODES)
        pretrain(agent, free.replay, updates=steps)
        x = frozen_features(agent, free)
        assert (collapse(x) == []) == healthy, (vicreg, float(feature_std(x)), float(effective_rank(x)))
        if healthy:
            trained_r2 = probe_r2(agent.encoder, agent.augment, free, folds=PROBE_EPISODES)
            assert trained_r2 > random_r2 + PROBE_MARGIN, (random_r2, trained_r2)


class CURLWithoutNegatives(CURL):
    """CURL with the part that prevents collapse removed: only the positive pair's similarity ``q^T W k`` is
    maximised, so nothing stops every observation mapping to one point."""

    def loss(self, batch, encoder, augment):
        query = encoder(augment(batch["obs"]))
        with torch.no_grad():
            key = self.key_encoder(augment(batch["obs"]))
        return -((query @ self.W) * key).sum(-1).mean(), health(query.detach(), key)


def test_collapse_detector_fails_a_collapsed_objective_and_a_constant_encoder(probe_data):
    """CURL without negatives (300 steps, seed 0; measured over seeds 0-2: feature std 0.001-0.002 from 0.08-0.5
    at init, the probe gain -0.025 to +0.012) and an encoder whose output is constant fail the detector; the
    random encoder at init passes it."""
    agent, _ = probe_agent("curl", probe_data)
    assert collapse(frozen_features(agent, probe_data)) == []
    agent.representation = CURLWithoutNegatives(agent.encoder, probe_data.observation_space, probe_data.action_space,
                                                agent.representation.cfg)
    agent.repr_opt = torch.optim.Adam(agent.representation.trainable_parameters(agent.encoder), lr=1e-3)
    pretrain(agent, probe_data.replay, updates=300)
    x = frozen_features(agent, probe_data)
    assert any("feature std" in reason for reason in collapse(x)), (float(feature_std(x)), float(effective_rank(x)))
    with torch.no_grad():
        agent.encoder.head[0].weight.zero_()  # a dead encoder: every input gives LayerNorm(bias)
    x = frozen_features(agent, probe_data)
    assert len(collapse(x)) == 2 and float(feature_std(x)) < 1e-6 and float(effective_rank(x)) == pytest.approx(1.0)
