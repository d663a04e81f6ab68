"""PPO for massively parallel (batched) envs, CleanRL-style: one readable file, explicit update steps.

Rollouts of `num_steps` agent steps x `num_envs` envs live on the training device; advantages by GAE
with truncation bootstrapping (same-step autoreset: a truncated episode's last observation is in
`info["final_obs"]`, and its value is added to the last reward); `update()` runs `epochs` passes of
`minibatches` shuffled minibatches over envs x time with the clipped surrogate, (optionally clipped)
value loss and entropy bonus. Observations are normalised by running statistics and rewards scaled by
the running std of the discounted return. Actor and critic each own an encoder from
`ssrl.nn.encoders.make_encoder` (the run's `encoder.*` keys) followed by an MLP head.

With a representation (`representation=spr|masked|world_model`) actor and critic share one encoder,
trained by the PPO loss and by the self-supervised loss (UNREAL, ATC and RAD/DrAC on Procgen add their
auxiliary losses to PPO/A2C the same way: one trunk under policy, value and auxiliary heads). After each
PPO minibatch step `update_representation` takes one step of that loss on a batch drawn from the rollout:
transitions (obs, action, reward, next obs) or, for modules with `sequence_length` K, K-step sequences that
lie inside one episode (the rollout's `next_obs` holds `info["final_obs"]` where an episode ended).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from ssrl.agents.base import Agent
from ssrl.config import EncoderConfig, PPOConfig, RepresentationConfig, TrainConfig
from ssrl.data import Batch, SequenceBatch
from ssrl.nn.augment import Augment
from ssrl.nn.encoders import make_encoder
from ssrl.nn.utils import adam, mlp
from ssrl.representations import make_representation


class RunningMeanStd(nn.Module):
    """Running mean and variance over batches (Chan et al.'s parallel update), kept as buffers."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.double().reshape(-1, *self.mean.shape)
        mean, var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = mean - self.mean, self.count + n
        self.var.copy_((self.var * self.count + var * n + delta**2 * self.count * n / total) / total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor, clip: float = 10.0) -> torch.Tensor:
        return ((x - self.mean.float()) / torch.sqrt(self.var.float() + 1e-8)).clamp(-clip, clip)


class ActorCritic(nn.Module):
    """Gaussian policy (state-independent log std) and value function, each encoder -> MLP.

    The encoders are `actor_encoder` and `critic_encoder`, or one `encoder` when `shared_encoder`."""

    def __init__(self, observation_space: gym.spaces.Box, action_dim: int, cfg: PPOConfig,
                 encoder_cfg: EncoderConfig, shared_encoder: bool = False) -> None:
        super().__init__()
        self.obs_rms = RunningMeanStd(observation_space.shape)
        if shared_encoder:
            self.encoder = make_encoder(observation_space, encoder_cfg)
        else:
            self.actor_encoder = make_encoder(observation_space, encoder_cfg)
            self.critic_encoder = make_encoder(observation_space, encoder_cfg)
        actor_encoder, critic_encoder = self.encoders
        self.actor = mlp(actor_encoder.features_dim, cfg.hidden_dim, action_dim)
        self.critic = mlp(critic_encoder.features_dim, cfg.hidden_dim, 1)
        self.log_std = nn.Parameter(torch.full((action_dim,), cfg.init_log_std))
        nn.init.orthogonal_(self.actor[-1].weight, 0.01)
        nn.init.zeros_(self.actor[-1].bias)
        self.norm_obs = cfg.norm_obs

    @property
    def encoders(self) -> tuple[nn.Module, nn.Module]:
        """The (actor's, critic's) encoders: the same module twice when shared."""
        if hasattr(self, "encoder"):
            return self.encoder, self.encoder
        return self.actor_encoder, self.critic_encoder

    def prepare(self, obs: torch.Tensor) -> torch.Tensor:
        """What the encoders see: observations normalised by the running statistics (if `norm_obs`)."""
        return self.obs_rms.normalize(obs) if self.norm_obs else obs

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.encoders[1](self.prepare(obs))).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.actor(self.encoders[0](self.prepare(obs)))
        # No argument validation: a diverged update shows as NaN metrics, which the run's guard names.
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for the env, clipped to [-1, 1]."""
        dist = self.distribution(obs)
        return (dist.mean if deterministic else dist.sample()).clamp(-1, 1)


class PPO(Agent):
    """The PPO learner: `collect()` fills a rollout from a batched env, `update()` trains on it."""

    @classmethod
    def from_config(cls, cfg: TrainConfig, obs_space: gym.Space, action_space: gym.spaces.Box,
                    device: torch.device, env: Any = None) -> PPO:
        """The run's learner on its batched ``env``; the LR anneals over the updates that ``cfg.frames`` takes."""
        if env is None:
            raise TypeError("PPO steps the run's batched env itself: make_agent(..., env=batched_env)")
        frames_per_update = cfg.agent.num_steps * env.num_envs * env.action_repeat
        total_updates = max(1, math.ceil(cfg.frames / frames_per_update))
        return cls(env, cfg.agent, device, total_updates, cfg.encoder, cfg.representation)

    def __init__(self, env: gym.vector.VectorEnv, cfg: PPOConfig, device: torch.device, total_updates: int,
                 encoder_cfg: EncoderConfig | None = None, repr_cfg: RepresentationConfig | None = None) -> None:
        self.cfg, self.env, self.device = cfg, env, device
        self.num_envs = env.num_envs
        obs_space, action_space = env.single_observation_space, env.single_action_space
        repr_cfg = repr_cfg or RepresentationConfig()
        self.model = ActorCritic(obs_space, action_space.shape[0], cfg, encoder_cfg or EncoderConfig(),
                                 shared_encoder=repr_cfg.name != "none").to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, eps=1e-5)
        # The representation seam (as in OffPolicyAgent): a module, its optimizer, its loss weight.
        self.augment = Augment("none", obs_space)  # state observations: identity (floats)
        self.representation = make_representation(repr_cfg, self.model.encoders[1], obs_space, action_space)
        self.repr_opt: torch.optim.Optimizer | None = None
        if self.representation is not None:
            self.representation.to(device)
            self.repr_opt = adam(self.representation.trainable_parameters(self.model.encoders[1]), lr=repr_cfg.lr)
        self.repr_weight = repr_cfg.weight
        self.return_rms = RunningMeanStd().to(device)
        self._discounted = torch.zeros(self.num_envs, device=device)
        self.total_updates, self.updates = total_updates, 0
        t, n = cfg.num_steps, self.num_envs
        obs_dim, action_dim = env.single_observation_space.shape, env.single_action_space.shape
        self.obs = torch.zeros(t, n, *obs_dim, device=device)
        self.actions = torch.zeros(t, n, *action_dim, device=device)
        self.log_probs = torch.zeros(t, n, device=device)
        self.rewards = torch.zeros(t, n, device=device)
        self.dones = torch.zeros(t, n, device=device)
        self.values = torch.zeros(t, n, device=device)
        if self.representation is not None:  # what the representation batches need besides the above
            self.next_obs = torch.zeros(t, n, *obs_dim, device=device)  # obs[t+1], or the final obs at episode ends
            self.env_rewards = torch.zeros(t, n, device=device)  # unscaled, no bootstrap
            self.terminated = torch.zeros(t, n, dtype=torch.bool, device=device)

    @torch.no_grad()
    def collect(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[tuple[float, float]]]:
        """Steps the env `num_steps` times from `obs`; returns the next obs and finished episodes' (return, length)."""
        cfg, model = self.cfg, self.model
        episodes: list[tuple[float, float]] = []
        for t in range(cfg.num_steps):
            obs = obs.to(self.device)
            dist = model.distribution(obs)
            action = dist.sample()
            self.obs[t], self.actions[t] = obs, action
            self.log_probs[t], self.values[t] = dist.log_prob(action).sum(-1), model.value(obs)
            obs, reward, terminated, truncated, info = self.env.step(action.clamp(-1, 1))
            reward, terminated, truncated = (x.to(self.device) for x in (reward, terminated, truncated))
            if self.representation is not None:
                self.env_rewards[t], self.next_obs[t], self.terminated[t] = reward, obs.to(self.device), terminated
                if "final_obs" in info:
                    ended = (terminated | truncated)[:, None]
                    self.next_obs[t] = torch.where(ended, info["final_obs"].to(self.device), self.next_obs[t])
            reward = self._scale_reward(reward, terminated | truncated)
            cut = truncated & ~terminated  # a step that also terminated is terminal (Gymnasium's TimeLimit sets both)
            if cut.any():  # bootstrap the cut-off tail from the final observation's value
                final_value = model.value(info["final_obs"].to(self.device))
                reward = reward + cfg.gamma * torch.where(cut, final_value, 0.0)
            self.rewards[t], self.dones[t] = reward, (terminated | truncated).float()
            if "episode" in info:
                mask = info["_episode"]
                episodes += list(zip(info["episode"]["r"][mask].tolist(), info["episode"]["l"][mask].tolist()))
        return obs.to(self.device), episodes

    def _scale_reward(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Divides by the running std of the discounted return (Gymnasium's NormalizeReward)."""
        if not self.cfg.norm_reward:
            return reward
        self._discounted = self._discounted * self.cfg.gamma + reward
        self.return_rms.update(self._discounted)
        self._discounted = torch.where(done, 0.0, self._discounted)
        return reward / torch.sqrt(self.return_rms.var.float() + 1e-8)

    @torch.no_grad()
    def advantages(self, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE(lambda) advantages and value targets; `dones[t]` cuts the trace after step t."""
        cfg = self.cfg
        next_value = self.model.value(next_obs)
        advantages = torch.zeros_like(self.rewards)
        last = torch.zeros(self.num_envs, device=self.device)
        for t in reversed(range(cfg.num_steps)):
            not_done = 1.0 - self.dones[t]
            value_next = next_value if t == cfg.num_steps - 1 else self.values[t + 1]
            delta = self.rewards[t] + cfg.gamma * value_next * not_done - self.values[t]
            last = delta + cfg.gamma * cfg.gae_lambda * not_done * last
            advantages[t] = last
        return advantages, advantages + self.values

    def update(self, next_obs: torch.Tensor) -> dict[str, float]:
        """`epochs` x `minibatches` clipped-PPO steps on the current rollout; returns mean metrics."""
        cfg = self.cfg
        if cfg.anneal_lr:
            self.optimizer.param_groups[0]["lr"] = cfg.lr * (1 - self.updates / max(self.total_updates, 1))
        advantages, returns = self.advantages(next_obs)
        batch = {
            "obs": self.obs.flatten(0, 1), "actions": self.actions.flatten(0, 1),
            "log_probs": self.log_probs.flatten(0, 1), "advantages": advantages.flatten(),
            "returns": returns.flatten(), "values": self.values.flatten(),
        }  # fmt: skip
        size = batch["obs"].shape[0]
        minibatch = size // cfg.minibatches
        totals: dict[str, float] = {}
        for _ in range(cfg.epochs):
            order = torch.randperm(size, device=self.device)
            for start in range(0, minibatch * cfg.minibatches, minibatch):
                index = order[start : start + minibatch]
                metrics = self.update_step({k: v[index] for k, v in batch.items()})
                if self.representation is not None:
                    metrics |= self.update_representation(self.representation_batch(minibatch))
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value / (cfg.epochs * cfg.minibatches)
        if cfg.norm_obs:  # after the update, so that collect and update saw the same statistics
            self.model.obs_rms.update(batch["obs"])
        self.updates += 1
        return totals

    def update_step(self, mb: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step: clipped surrogate + value loss - entropy bonus."""
        cfg = self.cfg
        dist = self.model.distribution(mb["obs"])
        log_prob = dist.log_prob(mb["actions"]).sum(-1)
        ratio = torch.exp(log_prob - mb["log_probs"])
        adv = (mb["advantages"] - mb["advantages"].mean()) / (mb["advantages"].std() + 1e-8)
        policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
        value = self.model.value(mb["obs"])
        value_loss = (value - mb["returns"]) ** 2
        if cfg.clip_value > 0:
            clipped = mb["values"] + (value - mb["values"]).clamp(-cfg.clip_value, cfg.clip_value)
            value_loss = torch.max(value_loss, (clipped - mb["returns"]) ** 2)
        value_loss = 0.5 * value_loss.mean()
        entropy = dist.entropy().sum(-1).mean()
        loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            approx_kl = ((ratio - 1) - (log_prob - mb["log_probs"])).mean()
            clip_fraction = ((ratio - 1).abs() > cfg.clip).float().mean()
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item(),
                "approx_kl": approx_kl.item(), "clip_fraction": clip_fraction.item()}  # fmt: skip

    @torch.no_grad()
    def representation_batch(self, size: int) -> Batch | SequenceBatch:
        """`size` draws (with replacement) from the rollout as the replay contract's batches
        (`ssrl.data.protocol`): one-step `Batch`es, or for a module with `sequence_length` K `SequenceBatch`es
        that lie inside one episode. Observations are normalised as the encoders see them; rewards are the env's."""
        assert self.representation is not None
        k, steps = self.representation.sequence_length, self.cfg.num_steps
        if k == 0:
            flat = torch.randint(0, steps * self.num_envs, (size,), device=self.device)
            t, env = flat // self.num_envs, flat % self.num_envs
            discount = torch.where(self.terminated[t, env], 0.0, self.cfg.gamma)
            return {"obs": self.model.prepare(self.obs[t, env]), "action": self.actions[t, env],
                    "reward": self.env_rewards[t, env], "discount": discount,
                    "next_obs": self.model.prepare(self.next_obs[t, env])}
        # Start t is valid when no episode ends before the last step t+k-1 (that one may end: next_obs has it).
        ends = self.dones[: steps - 1].cumsum(0)
        ends = torch.cat([torch.zeros_like(ends[:1]), ends])  # ends[t]: episode ends among steps < t
        valid = ends[k - 1 :] == ends[: steps - k + 1]  # (steps - k + 1, num_envs)
        flat = torch.multinomial(valid.flatten().float(), size, replacement=True)
        t, env = flat // self.num_envs, flat % self.num_envs
        window = t[:, None] + torch.arange(k, device=self.device)  # (B, K)
        obs = torch.cat([self.obs[t, env][:, None], self.next_obs[window, env[:, None]]], dim=1)
        return {"obs": self.model.prepare(obs), "action": self.actions[window, env[:, None]],
                "reward": self.env_rewards[window, env[:, None]], "terminated": self.terminated[window, env[:, None]]}

    def update_representation(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One step of the self-supervised loss; trains its module and, if `trains_encoder`, the critic's
        encoder (shared with the actor)."""
        assert self.representation is not None and self.repr_opt is not None
        metrics = self.representation.step(batch, self.model.encoders[1], self.augment, self.repr_opt,
                                           self.repr_weight)
        return {k: float(v) for k, v in metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything that continues training exactly: weights, optimizers, running statistics, counters."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "return_rms": self.return_rms.state_dict(), "discounted": self._discounted.clone(),
                 "updates": self.updates}  # fmt: skip
        if self.representation is not None and self.repr_opt is not None:
            state |= {"representation": self.representation.state_dict(), "repr_opt": self.repr_opt.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.return_rms.load_state_dict(state["return_rms"])
        self._discounted.copy_(state["discounted"])
        self.updates = int(state["updates"])
        if self.representation is not None and self.repr_opt is not None:
            self.representation.load_state_dict(state["representation"])
            self.repr_opt.load_state_dict(state["repr_opt"])
