"""Agent behaviour on fixed batches: losses fall, gradients reach only what they should, targets move only by
EMA, checkpoints round-trip."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.agents import make_agent
from ssrl.config import parse_overrides
from ssrl.nn.augment import Augment
from ssrl.nn.utils import schedule

PIXELS = gym.spaces.Box(0, 255, (9, 32, 32), np.uint8)
STATE = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACTIONS = gym.spaces.Box(-1, 1, (2,), np.float32)


class FixedReplay:
    """Always returns the same batch: lets a test watch a loss fall."""

    def __init__(self, obs_space, batch_size=16, seed=0):
        rng = np.random.default_rng(seed)

        def obs():
            if isinstance(obs_space, gym.spaces.Dict):
                return {k: draw(s) for k, s in obs_space.spaces.items()}
            return draw(obs_space)

        def draw(space):
            if space.dtype == np.uint8:
                return rng.integers(0, 256, (batch_size, *space.shape), dtype=np.uint8)
            return rng.normal(size=(batch_size, *space.shape)).astype(np.float32)

        self.batch = {"obs": obs(), "next_obs": obs(),
                      "action": rng.uniform(-1, 1, (batch_size, 2)).astype(np.float32),
                      "reward": rng.normal(size=batch_size).astype(np.float32),
                      "discount": np.full(batch_size, 0.99, np.float32)}

    def sample(self, batch_size, n_step=None):
        return self.batch


def build(agent="sac", space=PIXELS, *extra):
    cfg = parse_overrides([f"agent={agent}", "agent.hidden_dim=64", "agent.batch_size=16",
                           "encoder.num_filters=8", "encoder.num_layers=2", *extra])
    torch.manual_seed(0)
    return make_agent(cfg, space, ACTIONS, torch.device("cpu"))


SPACES = {"pixels": PIXELS, "state": STATE, "pixels+state": gym.spaces.Dict({"pixels": PIXELS, "state": STATE})}


@pytest.mark.parametrize("agent", ["sac", "drqv2"])
@pytest.mark.parametrize("obs", list(SPACES))
def test_updates_lower_the_critic_loss_on_a_fixed_batch(agent, obs):
    ag = build(agent, SPACES[obs], "agent.augmentation=none", "agent.lr=1e-3")
    replay = FixedReplay(SPACES[obs])
    losses = [float(ag.update(replay, frame=0)["critic_loss"]) for _ in range(60)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


@pytest.mark.parametrize("agent", ["sac", "drqv2"])
def test_actor_loss_leaves_encoder_untouched_and_critic_loss_trains_it(agent):
    ag = build(agent)
    batch = FixedReplay(PIXELS).batch
    obs = ag.augment(torch.as_tensor(batch["obs"]))
    features = ag.encoder(obs)
    ag.update_actor(features.detach(), frame=0)
    assert all(p.grad is None or not p.grad.any() for p in ag.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ag.actor.parameters())

    before = [p.clone() for p in ag.encoder.parameters()]
    actor_before = [p.clone() for p in ag.actor.parameters()]
    ag.update_critic(features, torch.as_tensor(batch["action"]), torch.as_tensor(batch["reward"]),
                     torch.as_tensor(batch["discount"]), ag.augment(torch.as_tensor(batch["next_obs"])), frame=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, ag.encoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(actor_before, ag.actor.parameters()))


def test_targets_move_only_by_their_ema():
    ag = build("sac", PIXELS, "agent.critic_tau=0.1", "agent.encoder_tau=0.2")
    assert all(not p.requires_grad for p in ag.critic_target.parameters())
    target_before = [p.clone() for p in ag.critic_target.parameters()]
    online_before = [p.clone() for p in ag.critic.parameters()]
    enc_target_before = [p.clone() for p in ag.encoder_target.parameters()]
    enc_before = [p.clone() for p in ag.encoder.parameters()]
    ag.update(FixedReplay(PIXELS), frame=0)  # num_updates 0: a target update happens
    assert any(not torch.equal(a, b) for a, b in zip(online_before, ag.critic.parameters()))
    # the EMA uses the online weights after this update's optimizer step
    for t0, t1, o1 in zip(target_before, ag.critic_target.parameters(), ag.critic.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * o1)
    for t0, t1, o1 in zip(enc_target_before, ag.encoder_target.parameters(), ag.encoder.parameters()):
        torch.testing.assert_close(t1, 0.8 * t0 + 0.2 * o1)
    assert any(not torch.equal(a, b) for a, b in zip(enc_before, ag.encoder.parameters()))
    # update 1 is not a target update (target_update_every=2): targets stay put
    frozen = [p.clone() for p in ag.critic_target.parameters()]
    ag.update(FixedReplay(PIXELS), frame=0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, ag.critic_target.parameters()))


def test_drqv2_uses_online_encoder_for_targets():
    ag = build("drqv2")
    assert ag.encoder_target is None


@pytest.mark.parametrize("agent", ["sac", "drqv2"])
def test_checkpoint_round_trip_gives_same_actions_and_updates(agent):
    a = build(agent)
    replay = FixedReplay(PIXELS)
    for _ in range(3):
        a.update(replay, frame=0)
    b = build(agent)
    b.restore(a.checkpoint())
    obs = replay.batch["obs"][0]
    np.testing.assert_array_equal(a.act(obs, 0, eval_mode=True), b.act(obs, 0, eval_mode=True))
    torch.manual_seed(1)
    ma = a.update(replay, frame=0)
    torch.manual_seed(1)
    mb = b.update(replay, frame=0)
    assert float(ma["critic_loss"]) == float(mb["critic_loss"])


def test_eval_actions_are_deterministic_and_in_bounds():
    ag = build("sac")
    obs = FixedReplay(PIXELS).batch["obs"][0]
    a1, a2 = ag.act(obs, 0, eval_mode=True), ag.act(obs, 0, eval_mode=True)
    np.testing.assert_array_equal(a1, a2)
    explore = np.stack([ag.act(obs, 0, eval_mode=False) for _ in range(5)])
    assert explore.std(0).min() > 0 and np.abs(explore).max() <= 1


def test_augmentations_shift_and_crop():
    x = torch.arange(2 * 3 * 20 * 20, dtype=torch.float32).reshape(2, 3, 20, 20).to(torch.uint8)
    shift = Augment("shift", gym.spaces.Box(0, 255, (3, 20, 20), np.uint8))
    torch.manual_seed(0)
    y = shift(x)
    assert y.shape == (2, 3, 20, 20) and y.dtype == torch.uint8  # uint8 is kept until the encoder
    crop = Augment("crop", gym.spaces.Box(0, 255, (3, 20, 20), np.uint8))
    assert crop.output_space().shape == (3, 4, 4)
    z = crop(x)
    assert z.shape == (2, 3, 4, 4)
    # every random crop is a contiguous window of its own image
    for i in range(2):
        windows = x[i].float().unfold(1, 4, 1).unfold(2, 4, 1)  # (C, 17, 17, 4, 4)
        assert (windows == z[i][:, None, None]).flatten(3).all(-1).all(0).any()
    torch.testing.assert_close(crop.eval_view(x), x[..., 8:12, 8:12])


def test_schedule():
    assert schedule("linear(1.0,0.1,100)", 0) == 1.0
    assert schedule("linear(1.0,0.1,100)", 50) == pytest.approx(0.55)
    assert schedule("linear(1.0,0.1,100)", 1000) == pytest.approx(0.1)
    assert schedule("0.2", 5) == 0.2
    with pytest.raises(ValueError, match="bad schedule"):
        schedule("cosine(1,2)", 0)
