"""The agent interface (:class:`Agent`) and what SAC and DrQ-v2 share (:class:`OffPolicyAgent`): encoder,
double-Q critic with EMA target, augmentation, the update loop and the representation seam. Subclasses add the
actor, ``policy``, ``target_value`` and ``update_actor``."""

from __future__ import annotations

import abc
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssrl.config import EncoderConfig, OffPolicyConfig, RepresentationConfig, SpeedConfig, TrainConfig
from ssrl.data import Replay, to_torch
from ssrl.errors import ConfigError
from ssrl.nn.augment import Augment
from ssrl.nn.encoders import PixelEncoder, make_encoder
from ssrl.nn.utils import (
    adam,
    compile_or_eager,
    frozen_copy,
    keep_freed_memory,
    mlp,
    orthogonal_init,
    soft_update,
)
from ssrl.representations import make_representation

Metrics = dict[str, torch.Tensor]


class Critic(nn.Module):
    """Two Q-functions on (features, action)."""

    def __init__(self, features_dim: int, action_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.q1 = mlp(features_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(features_dim + action_dim, hidden_dim, 1)
        self.apply(orthogonal_init)

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([features, action], dim=-1)
        return self.q1(x), self.q2(x)


class Agent(abc.ABC):
    """What every agent implements so that ``ssrl.agents.make_agent`` can build it from a run's config (register
    it with ``ssrl.config.register_agent``)."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: TrainConfig, obs_space: gym.Space, action_space: gym.spaces.Box,
                    device: torch.device, env: Any = None) -> Agent:
        """The agent for ``cfg`` acting in ``obs_space``/``action_space`` (``env``: the batched env, for agents
        that step it themselves)."""


class OffPolicyAgent(nn.Module, Agent):
    """Actor-critic on encoder features. The critic loss (and the representation loss, if any) train the
    encoder; the actor sees detached features.

    Each ``update`` samples one batch, augments and encodes it, then runs ``update_critic``,
    ``update_actor`` (every ``actor_update_every`` updates), ``update_representation`` and the target EMA.
    """

    actor: nn.Module
    actor_opt: torch.optim.Optimizer

    actor_update_every = 1  # updates per actor update (SAC: cfg.actor_update_every)
    target_update_every = 1  # updates per target EMA step (SAC: cfg.target_update_every)
    encoder_tau: float | None = None  # EMA rate of a target copy of the encoder (SAC); None: targets use the online one

    def __init__(self, obs_space: gym.Space, action_space: gym.spaces.Box, cfg: OffPolicyConfig,
                 encoder_cfg: EncoderConfig, repr_cfg: RepresentationConfig, device: torch.device) -> None:
        super().__init__()
        assert isinstance(action_space, gym.spaces.Box), f"continuous (Box) actions only, got {action_space}"
        self.cfg, self.device = cfg, device
        self.obs_space, self.action_space = obs_space, action_space
        self.action_dim = int(np.prod(action_space.shape))
        self.augment = Augment(cfg.augmentation, obs_space)
        if encoder_cfg.pretrained:
            from ssrl.nn.backbone import pretrained_encoder

            self.encoder = pretrained_encoder(encoder_cfg, self.augment.output_space())
        else:
            self.encoder = make_encoder(self.augment.output_space(), encoder_cfg)
        self.critic = Critic(self.encoder.features_dim, self.action_dim, cfg.hidden_dim)
        self.critic_target = frozen_copy(self.critic)
        self.encoder_target = frozen_copy(self.encoder) if self.encoder_tau is not None else None
        self.representation = make_representation(repr_cfg, self.encoder, obs_space, action_space)
        if self.representation is not None and self.representation.adds_intrinsic_reward and cfg.n_step != 1:
            raise ConfigError(f"an intrinsic reward is defined for one-step transitions: set agent.n_step=1 "
                              f"(got {cfg.n_step})")
        self.repr_weight = repr_cfg.weight
        encoder_group = [] if encoder_cfg.pretrained and encoder_cfg.freeze else [
            {"params": self.encoder.parameters(), "lr": cfg.lr * encoder_cfg.lr_scale}]
        self.critic_opt = adam([{"params": self.critic.parameters(), "lr": cfg.lr}, *encoder_group], lr=cfg.lr)
        self.repr_opt = None if self.representation is None else adam(
            self.representation.trainable_parameters(self.encoder), lr=repr_cfg.lr)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.speed = SpeedConfig(channels_last=False)
        self._sampler: ThreadPoolExecutor | None = None
        self._prefetch: Future | None = None
        self._prefetch_from: tuple[Replay, Any] | None = None  # the replay and its stream's state before the draw

    @classmethod
    def from_config(cls, cfg: TrainConfig, obs_space: gym.Space, action_space: gym.spaces.Box,
                    device: torch.device, env: Any = None) -> OffPolicyAgent:
        agent = cls(obs_space, action_space, cfg.agent, cfg.encoder, cfg.representation, device)
        agent.set_speed(cfg.speed)
        return agent

    def set_speed(self, speed: SpeedConfig) -> None:
        """Apply the speed settings (docs/speed.md); none of them changes the maths except ``amp``."""
        memory_format = torch.channels_last if speed.channels_last else torch.contiguous_format
        self.to(memory_format=memory_format)  # conv weights; parameters keep their identity (optimizers stay valid)
        keep_freed_memory(speed.keep_memory)  # process-wide
        for module in self.modules():
            if isinstance(module, PixelEncoder):
                module.memory_format = memory_format
                module.amp_dtype = torch.bfloat16 if speed.amp == "bf16" else None
        if speed.compile and not self.speed.compile:
            for name in ("encoder", "encoder_target", "critic", "critic_target", "actor"):
                if getattr(self, name, None) is not None:
                    compile_or_eager(getattr(self, name), name)
        self.speed = speed

    # ------------------------------------------------------------------------------------------- acting
    def obs_to_tensor(self, obs: Any) -> Any:
        """A single environment observation as a batch of one on the agent's device."""
        if isinstance(obs, dict):
            return {k: self.obs_to_tensor(v) for k, v in obs.items()}
        return to_torch(np.asarray(obs)[None], self.device)

    @torch.no_grad()
    def act(self, obs: Any, frame: int, eval_mode: bool) -> np.ndarray:
        """The action for one observation: the policy's mean in eval mode, an exploratory sample otherwise."""
        return self.act_batch(self.obs_to_tensor(obs), frame, eval_mode)[0].cpu().numpy()

    @torch.no_grad()
    def act_batch(self, obs: Any, frame: int, eval_mode: bool) -> torch.Tensor:
        """Actions (B, *A) on the agent's device for a batch of observations (tensors, e.g. a batched env's)."""
        features = self.encoder(self.augment.eval_view(to_torch(obs, self.device)))
        return self.policy(features, frame, eval_mode)

    def policy(self, features: torch.Tensor, frame: int, eval_mode: bool) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ updates
    def sample(self, replay: Replay) -> dict[str, Any]:
        """This update's batch on the device. With ``speed.prefetch`` the next batch is drawn by a background
        thread while this update computes (so it misses the transitions added in between)."""
        def draw() -> dict[str, Any]:
            return to_torch(replay.sample(self.cfg.batch_size, self.cfg.n_step), self.device)

        batch = self._prefetch.result() if self._prefetch is not None else draw()
        self._prefetch = None
        if self.speed.prefetch:
            if self._sampler is None:
                self._sampler = ThreadPoolExecutor(1, thread_name_prefix="ssrl-prefetch")
            self._prefetch_from = replay, replay.rng_state
            self._prefetch = self._sampler.submit(draw)
        return batch

    def drop_prefetch(self) -> None:
        """Discard the batch drawn ahead and rewind the replay's sampling stream to before it. Called when a
        checkpoint is written, so the next update draws exactly what a run resumed from that checkpoint draws."""
        if self._prefetch is not None:
            self._prefetch.result()
            replay, state = self._prefetch_from
            replay.rng_state = state
            self._prefetch = None

    def update(self, replay: Replay, frame: int) -> Metrics:
        """One gradient update from a replay batch; returns detached metric tensors."""
        batch = self.sample(replay)
        bonus = None
        if self.representation is not None and self.representation.adds_intrinsic_reward:
            bonus = self.representation.intrinsic_reward(batch, self.augment)
            batch["reward"] = batch["reward"] + bonus
        obs = self.augment(batch["obs"])
        with torch.no_grad():
            next_obs = self.augment(batch["next_obs"])
        features = self.encoder(obs)
        metrics = self.update_critic(features, batch["action"], batch["reward"], batch["discount"], next_obs, frame)
        if self.due(self.actor_update_every):
            metrics |= self.update_actor(features.detach(), frame)
        if self.representation is not None:
            metrics |= self.update_representation(batch, replay)
        if bonus is not None:
            metrics["intrinsic_reward"] = bonus.mean()
        if self.due(self.target_update_every):
            self.update_targets()
        self.num_updates += 1
        if self._prefetch is not None:
            self._prefetch.result()  # the caller may add to the replay once update() returns
        return metrics

    def due(self, every: int) -> bool:
        """Whether this update is one of every ``every`` (reading the counter only when it matters: on a GPU that
        is a device sync)."""
        return every == 1 or int(self.num_updates) % every == 0

    def target_value(self, next_features: torch.Tensor, frame: int) -> torch.Tensor:
        """Soft/deterministic value of the next state under the target critic (without the discount)."""
        raise NotImplementedError

    def update_critic(self, features: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor, next_obs: Any, frame: int) -> Metrics:
        """Bellman regression of both Q-functions; its gradients train the critic and the encoder."""
        with torch.no_grad():
            target_encoder = self.encoder if self.encoder_target is None else self.encoder_target
            next_features = target_encoder(next_obs)
            target_q = reward.unsqueeze(-1) + discount.unsqueeze(-1) * self.target_value(next_features, frame)
        q1, q2 = self.critic(features, action)
        loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        return {"critic_loss": loss.detach(), "q": q1.detach().mean(), "target_q": target_q.mean()}

    def update_actor(self, features: torch.Tensor, frame: int) -> Metrics:
        raise NotImplementedError

    def update_representation(self, batch: dict[str, Any], replay: Replay) -> Metrics:
        """One step of the self-supervised objective on the batch (or on replay sequences if it needs them)."""
        assert self.representation is not None and self.repr_opt is not None
        length = self.representation.sequence_length
        if length > 0:
            batch = to_torch(replay.sample_sequences(self.cfg.batch_size, length), self.device)
        return self.representation.step(batch, self.encoder, self.augment, self.repr_opt, self.repr_weight)

    def update_targets(self) -> None:
        soft_update(self.critic_target, self.critic, self.cfg.critic_tau)
        if self.encoder_target is not None:
            soft_update(self.encoder_target, self.encoder, self.encoder_tau)

    # ------------------------------------------------------------------------------------- checkpoints
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"critic": self.critic_opt, "actor": self.actor_opt}
        if self.repr_opt is not None:
            opts["representation"] = self.repr_opt
        return opts

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, targets and optimizer states."""
        return {"model": self.state_dict(), "optim": {k: o.state_dict() for k, o in self.optimizers().items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["model"])
        for key, opt in self.optimizers().items():
            opt.load_state_dict(state["optim"][key])
