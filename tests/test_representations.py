"""Representation modules: config, losses fall, gradients reach exactly the right parameters, targets move only
by EMA, the intrinsic-reward seam, end-to-end `ssrl train` with SAC and DrQ-v2, and a linear probe that shows
pretraining learns the physics."""

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
from ssrl.eval.probe import collect, pretrain, probe_r2
from ssrl.experiments.offpolicy import Trainer
from ssrl.representations.masked import cube_mask

PIXELS = gym.spaces.Box(0, 255, (9, 32, 32), np.uint8)
STATE = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACTIONS = gym.spaces.Box(-1, 1, (2,), np.float32)
SPACES = {"pixels": PIXELS, "state": STATE, "pixels+state": gym.spaces.Dict({"pixels": PIXELS, "state": STATE})}
MODULES = ["curl", "spr", "masked", "world_model"]
HEADS = {"spr": "representation.inverse_coef=1", "world_model": "representation.decoder_coef=1"}  # optional heads on
B, K = 16, 5


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
    with pytest.raises(ConfigError, match="agent.n_step=1"):
        build("world_model", PIXELS, "representation.intrinsic_coef=0.1", agent="drqv2")  # DrQ-v2: n_step=3


# -------------------------------------------------------------------------------------------- behaviour
# dict observations change the code path only for `masked` (both losses) and `world_model` (a decoder per key)
@pytest.mark.parametrize("module,obs", [(m, o) for m in MODULES for o in SPACES
                                        if o != "pixels+state" or m in ("masked", "world_model")])
def test_loss_falls_on_a_fixed_dataset(module, obs):
    agent = build(module, SPACES[obs], "agent.augmentation=none", HEADS.get(module, "representation.lr=1e-3"))
    replay = FixedReplay(SPACES[obs])
    losses = [float(repr_step(agent, replay)["repr_loss"]) for _ in range(25)]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("obs", ["pixels", "pixels+state"])
@pytest.mark.parametrize("module", MODULES)
def test_gradients_reach_exactly_the_encoder_and_the_modules_heads(module, obs):
    agent = build(module, SPACES[obs], HEADS.get(module, "agent.lr=1e-3"))
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
    agent = build("masked", STATE, "representation.step_mask_ratio=0.5")
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
    assert float(trained[-1]["repr_feature_std"]) > 0


# ------------------------------------------------------------------------------------------------ probe
@pytest.mark.parametrize("module", ["curl", "spr"])
def test_pretrained_encoder_beats_random_init_on_a_linear_physics_probe(module):
    """The module's objective alone (CURL; SPR, which collapses without its BatchNorm projector when no RL loss
    trains it) on 750 random-policy cartpole frames (32x32): the R^2 of a ridge probe from frozen features to the
    state (cart position, pole cos/sin, velocities), cross-validated over the 6 episodes, rises clearly above the
    same encoder at init."""
    torch.set_num_threads(1)
    data = collect("dmc/cartpole-swingup", episodes=6, size=32)
    cfg = parse_overrides(["agent.hidden_dim=32", "agent.batch_size=32", "encoder.num_filters=8", "encoder.num_layers=2",
                           f"representation={module}"])
    torch.manual_seed(0)
    agent = make_agent(cfg, data.observation_space, data.action_space, torch.device("cpu"))
    random_r2 = probe_r2(agent.encoder, agent.augment, data, folds=6)
    losses = pretrain(agent, data.replay, updates=1500)
    trained_r2 = probe_r2(agent.encoder, agent.augment, data, folds=6)
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
    assert trained_r2 > random_r2 + 0.1, (random_r2, trained_r2)
