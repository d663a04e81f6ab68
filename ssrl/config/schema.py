"""The typed run configuration: one dataclass per group, each field with its default.

A run is one :class:`TrainConfig`. Its groups (``agent``, ``representation``, ``encoder``) are dataclasses
selected by name (``agent=drqv2``, see :mod:`ssrl.config.registry`) and tuned by dotted keys (``agent.lr=3e-4``,
see :mod:`ssrl.config.overrides`). :func:`validate` checks what types alone cannot.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssrl.errors import ConfigError


# --------------------------------------------------------------------------------------------------- groups
# Every field's comment (on its line, else the comment lines right above it) is its description in
# `ssrl <command> --help`, `ssrl config` and `ssrl config --describe KEY` (ssrl.config.describe); keep it to a line.
@dataclass
class OffPolicyConfig:
    """What every off-policy agent's config has: its batch, learning rate, networks, return and update cadence."""

    name: str = ""  # the agent (sac, drqv2, ppo); selects this group's class
    batch_size: int = 256  # transitions per gradient update
    lr: float = 1e-4  # Adam learning rate of the critic, actor and encoder
    hidden_dim: int = 1024  # width of the actor and critic MLPs
    discount: float = 0.99  # reward discount gamma
    n_step: int = 1  # n-step returns (1: one-step TD targets)
    critic_tau: float = 0.01  # EMA rate of the target critic
    update_every: int = 1  # env steps per update (single env)
    augmentation: str = "shift"  # image augmentation: none, shift (DrQ +-4 px) or crop (RAD/CURL, 16 px)


@dataclass
class SACConfig(OffPolicyConfig):
    """SAC with the SAC-AE/CURL pixel encoder (defaults: CURL's published hyperparameters)."""

    name: str = "sac"
    batch_size: int = 512
    lr: float = 1e-3
    encoder_tau: float = 0.05  # EMA of the encoder the critic targets use
    actor_update_every: int = 2  # updates per actor (and temperature) update
    target_update_every: int = 2  # updates per target-network EMA step
    init_temperature: float = 0.1  # initial entropy temperature alpha
    alpha_lr: float = 1e-4  # learning rate of the temperature
    alpha_beta: float = 0.5  # Adam beta1 of the temperature


@dataclass
class DrQV2Config(OffPolicyConfig):
    """DrQ-v2-style DDPG: n-step returns, scheduled exploration noise (defaults: DrQ-v2's published values)."""

    name: str = "drqv2"
    n_step: int = 3
    update_every: int = 2
    stddev_schedule: str = "linear(1.0,0.1,200000)"  # exploration noise: a number or linear(start,end,frames)
    stddev_clip: float = 0.3  # clip of the target policy's smoothing noise


@dataclass
class PPOConfig:
    """PPO for batched envs (defaults: Brax/Playground-like for DMC state tasks; docs/batched.md)."""

    name: str = "ppo"  # the agent (sac, drqv2, ppo); selects this group's class
    num_steps: int = 32  # agent steps per env per rollout
    epochs: int = 4  # passes over each rollout
    minibatches: int = 8  # minibatches per epoch
    lr: float = 1e-3  # Adam learning rate
    anneal_lr: bool = True  # decay the learning rate linearly to 0 over the budget
    gamma: float = 0.99  # reward discount
    gae_lambda: float = 0.95  # GAE lambda
    clip: float = 0.2  # policy ratio clip
    clip_value: float = 0.0  # 0: unclipped value loss
    ent_coef: float = 0.0  # entropy bonus coefficient
    vf_coef: float = 0.5  # value loss coefficient
    max_grad_norm: float = 0.5  # gradient norm clip
    hidden_dim: int = 256  # width of the actor and critic MLPs
    init_log_std: float = -0.5  # initial log standard deviation of the Gaussian policy
    norm_obs: bool = True  # normalise observations by running statistics
    norm_reward: bool = True  # scale rewards by the running std of the discounted return


@dataclass
class EncoderConfig:
    """Observation encoder: SAC-AE/CURL conv stack for pixels, MLP for state vectors."""

    feature_dim: int = 50  # size of the encoder's output features
    num_filters: int = 32  # channels of each conv layer (pixels)
    num_layers: int = 4  # conv layers (pixels)
    state_hidden_dim: int = 256  # width of the state MLP encoder
    lr_scale: float = 1.0  # the encoder trains at the agent's lr times this
    pretrained: str = ""  # a backbone (ssrl.load_backbone path) for the pixels; `encoder=pretrained:PATH` sets it
    freeze: bool = False  # with `pretrained`: keep the backbone fixed (else fine-tune at lr * lr_scale)


@dataclass
class RepresentationConfig:
    """The self-supervised objective added to the agent's losses (``none``: augmentation only)."""

    name: str = "none"  # the objective (none, curl, spr, masked, world_model); selects this group's class
    weight: float = 1.0  # the objective's loss weight
    lr: float = 1e-3  # learning rate of the objective's own heads


@dataclass
class ObjectiveConfig(RepresentationConfig):
    """A self-supervised objective's config: ``trains_encoder`` says whether its loss trains the shared encoder."""

    trains_encoder: bool = True  # the objective's loss trains the shared encoder (false: only its own heads)


@dataclass
class CURLConfig(ObjectiveConfig):
    """CURL (Srinivas et al. 2020): InfoNCE between the encoder (query) and its EMA (key) through a bilinear W.
    Defaults: CURL's published values (key-encoder tau 0.05, lr 1e-3)."""

    name: str = "curl"
    tau: float = 0.05  # EMA rate of the key encoder


@dataclass
class SPRConfig(ObjectiveConfig):
    """SPR (Schwarzer et al. 2021): K-step latent rollouts predict EMA-target projections (cosine loss)."""

    name: str = "spr"
    k: int = 5  # latent rollout steps
    tau: float = 1.0  # SPR with augmentation: target = online weights (its tau=0, i.e. no momentum)
    inverse_coef: float = 0.0  # > 0 adds SGI's inverse-dynamics loss (a_t from z_t, z_t+1)
    hidden_dim: int = 256  # width of the transition model
    projection_dim: int = 128  # size of the projection the loss compares


@dataclass
class SpreadObjectiveConfig(ObjectiveConfig):
    """An objective that regresses latents (no negatives) plus VICReg's variance and covariance terms on its online
    latents (Bardes, Ponce & LeCun 2022), which keep the latents spread and decorrelated."""

    variance_coef: float = 1.0  # VICReg variance term on the online latents: keeps reward-free training from collapse
    covariance_coef: float = 0.04  # VICReg covariance term on the online latents (decorrelates dimensions)
    variance_target: float = 0.5  # the std per latent dimension below which the variance term acts


@dataclass
class MaskedConfig(SpreadObjectiveConfig):
    """Masked modelling of observation sequences against an EMA target: whole observations masked in latent space
    (M-CURL-style, Zhu et al. 2020), or masks on the inputs (pixels: MLR's cubes, Yu et al. 2022; states: masked
    dims/steps reconstructed from context and actions)."""

    name: str = "masked"
    variance_coef: float = 0.0  # VICReg terms: off (on cartpole they raised the probe, not on finger or MetaWorld)
    covariance_coef: float = 0.0
    k: int = 4  # sequence of k+1 observations (latent: each encoded once, by the online or the target encoder)
    mask_space: str = "latent"  # latent: whole observations masked after encoding; input: pixel cubes (MLR), entries
    mask_ratio: float = 0.75  # fraction of the k+1 observations (input: of pixel cubes / state entries) masked
    step_mask_ratio: float = 0.0  # states: fraction of whole time steps masked as well
    cube_size: int = 8  # pixels per side of a spatial cube
    cube_time: int = 2  # time steps per cube
    tau: float = 0.01  # EMA rate of the target encoder
    hidden_dim: int = 64  # transformer width
    layers: int = 2  # transformer layers
    heads: int = 2  # attention heads
    projection_dim: int = 128  # size of the projection the loss compares


@dataclass
class WorldModelConfig(SpreadObjectiveConfig):
    """Deterministic latent world model (TD-MPC, Hansen et al. 2022): latent consistency + reward over a horizon,
    optional observation decoder, optional curiosity bonus (ICM, Pathak et al. 2017)."""

    name: str = "world_model"
    k: int = 5  # horizon
    rho: float = 0.5  # per-step loss discount
    consistency_coef: float = 2.0  # weight of the latent consistency loss
    reward_coef: float = 0.5  # weight of the reward prediction loss
    decoder_coef: float = 0.0  # > 0 adds an observation decoder (pixels at decoder_size x decoder_size)
    decoder_size: int = 16  # side of the decoder's pixel target
    intrinsic_coef: float = 0.0  # > 0 adds coef * one-step latent prediction error to the agent's reward
    tau: float = 0.01  # EMA rate of the target encoder
    hidden_dim: int = 256  # width of the dynamics and reward MLPs


@dataclass
class SpeedConfig:
    """How the update runs, not what it computes (docs/speed.md). Only ``amp`` changes the numerics."""

    channels_last: bool = True  # NHWC convolutions (oneDNN / cuDNN fast path)
    compile: bool = False  # torch.compile the encoder, critic and actor (falls back to eager with a warning)
    amp: str = "none"  # bf16: the conv trunk runs under bf16 autocast (changes the numerics)
    prefetch: bool = False  # sample the next batch in a background thread while this update computes
    keep_memory: bool = True  # glibc malloc reuses freed memory instead of mapping large blocks afresh (Linux)


@dataclass
class GuardConfig:
    """Divergence checks (docs/safety.md). Every update's metrics must be finite, every loss at most
    ``max_abs_loss`` in magnitude and every action finite; else the run stops naming the metric and frame."""

    max_abs_loss: float = 1e10  # stop when a loss exceeds this in magnitude (0: no bound on finite losses)
    check_every: int = 100  # on a GPU, updates between checks (one device sync each); on CPU every update


# ---------------------------------------------------------------------------------------------- top level
@dataclass
class TrainConfig:
    """Everything one training run needs. Budgets and intervals count environment frames (action repeat
    included)."""

    env: str = "dmc/cartpole-swingup"  # dmc/<domain>-<task> or gym/<id> (`ssrl tasks` lists them)
    obs: str = "pixels"  # what the agent sees: rendered frames, the state vector or both
    num_envs: int = 0  # parallel envs; 0: the agent's default (64 for ppo, 1 for sac/drqv2); >1 batched envs
    # sac/drqv2 with num_envs > 1 (batched envs): gradient updates per vector step; 0: num_envs / agent.update_every
    updates_per_step: float = 0.0
    backend: str = "auto"  # batched-env physics (ssrl.envs.make_batched); auto: warp on CUDA if installed, else cpu
    env_threads: int = 0  # CPU threads of the batched physics; 0: all cores
    render_workers: int = 0  # batched pixels: renderer processes (0: render in the training process)
    size: int = 84  # side of the agent's square pixel view
    frame_stack: int = 3  # stacked frames per observation
    action_repeat: int = 0  # 0: the task's default (PlaNet/CURL protocol)
    render: str = "fast"  # fast, dmc (dm_control's look, as in published results) or warp (batched, backend=warp)
    frames: int = 100_000  # budget in environment frames (action repeat included)
    seed_frames: int = 4000  # random-action frames before updates start
    seed: int = 0  # seeds the envs, networks and replay
    run_dir: str = ""  # default: runs/<env>/<agent>-<representation>/seed<seed>
    experiment: str = ""  # groups runs (multirun, sweeps, wandb group); with no run_dir: runs/<experiment>/<overrides>
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    replay_capacity: int = 100_000  # transitions the replay keeps
    eval_every: int = 10_000  # frames between evaluations
    eval_episodes: int = 10  # deterministic-policy episodes per evaluation
    checkpoint_every: int = 10_000  # frames between checkpoints (written at the next episode end)
    wandb: bool = False  # log to Weights & Biases as well as the CSV files
    wandb_project: str = "ssrl"  # the wandb project
    wandb_mode: str = "online"  # offline needs no account (`wandb sync RUN_DIR/wandb` later)
    progress: bool = True  # show the progress bar (false: only eval lines and the summary)
    restart: bool = False  # move an existing run in run_dir aside (to <run_dir>.old-<time>) and start over
    agent: OffPolicyConfig | PPOConfig = field(default_factory=SACConfig)  # the RL algorithm
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # the observation encoder
    representation: RepresentationConfig = field(default_factory=RepresentationConfig)  # the self-supervised loss
    speed: SpeedConfig = field(default_factory=SpeedConfig)  # how updates run (docs/speed.md)
    guard: GuardConfig = field(default_factory=GuardConfig)  # divergence checks (docs/safety.md)

    def resolved_run_dir(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        env = self.env.replace("/", "-")
        return Path("runs") / env / f"{self.agent.name}-{self.representation.name}" / f"seed{self.seed}"


CHOICES: dict[str, tuple[str, ...]] = {
    "obs": ("pixels", "state", "pixels+state"),
    "render": ("fast", "dmc", "warp"),
    "wandb_mode": ("online", "offline", "disabled"),
    "agent.augmentation": ("none", "shift", "crop"),
    "speed.amp": ("none", "bf16"),
    "backend": ("auto", "cpu", "warp"),
    "representation.mask_space": ("input", "latent"),
}
POSITIVE = {"size", "frame_stack", "frames", "eval_episodes", "replay_capacity", "eval_every", "checkpoint_every"}

# The range of every option of that name in any group (agent, representation, encoder, guard, pretraining's):
# (low, high, low included, high included).
_INF = float("inf")
_COUNT, _RATE, _FRACTION, _WEIGHT = (1, _INF, True, True), (0, _INF, False, True), (0, 1, True, False), \
    (0, _INF, True, True)
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    **dict.fromkeys(("lr", "alpha_lr", "lr_scale", "init_temperature", "max_grad_norm", "clip"), _RATE),
    **dict.fromkeys(("discount", "gamma", "critic_tau", "encoder_tau", "tau"), (0, 1, False, True)),
    **dict.fromkeys(("gae_lambda", "rho", "alpha_beta"), (0, 1, True, True)),
    **dict.fromkeys(("mask_ratio", "step_mask_ratio"), _FRACTION),
    **dict.fromkeys(("weight", "inverse_coef", "consistency_coef", "reward_coef", "decoder_coef", "intrinsic_coef",
                     "variance_coef", "covariance_coef", "variance_target", "ent_coef", "vf_coef", "clip_value",
                     "stddev_clip", "max_abs_loss", "weight_decay"),
                    _WEIGHT),
    **dict.fromkeys(("batch_size", "hidden_dim", "n_step", "update_every", "actor_update_every",
                     "target_update_every", "num_steps", "epochs", "minibatches", "feature_dim", "num_filters",
                     "num_layers", "state_hidden_dim", "k", "cube_size", "cube_time", "layers", "heads",
                     "projection_dim", "decoder_size", "check_every"), _COUNT),
}


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Check every option of ``obj``'s groups (nested dataclasses) against :data:`RANGES`; a value outside its
    range is a :class:`ConfigError` naming the dotted key."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{prefix}{f.name}.")
        elif f.name in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high, low_in, high_in = RANGES[f.name]
            ok = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
            if not ok or value != value:
                span = (f"{'>=' if low_in else '>'} {low:g}" if high == _INF else
                        f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}")
                raise ConfigError(f"{prefix}{f.name}={value}: must be {span}")


def validate(cfg: TrainConfig) -> None:
    """Check values that types alone cannot."""
    check_ranges(cfg)
    for key, allowed in CHOICES.items():
        obj: Any = cfg
        for part in key.split("."):
            obj = getattr(obj, part, None)
        if obj is not None and obj not in allowed:
            raise ConfigError(f"{key}={obj!r}: choose one of {', '.join(allowed)}")
    for key in POSITIVE:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key}={getattr(cfg, key)}: must be positive")
    for key in ("seed_frames", "action_repeat", "threads", "num_envs", "env_threads", "render_workers"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}={getattr(cfg, key)}: must be >= 0")
    if cfg.render == "warp" and (derive(cfg).num_envs <= 1 or cfg.backend != "warp"):
        raise ConfigError("render=warp (MuJoCo Warp's ray tracer) draws batched envs of backend=warp: "
                          "set num_envs>1 and backend=warp, or render=fast")
    if isinstance(cfg.agent, PPOConfig):
        _validate_ppo(cfg)
    else:
        if cfg.agent.batch_size <= 0 or cfg.agent.n_step <= 0:
            raise ConfigError("agent.batch_size and agent.n_step must be positive")
        if cfg.updates_per_step < 0:
            raise ConfigError(f"updates_per_step={cfg.updates_per_step}: must be >= 0")
    if cfg.encoder.freeze and not cfg.encoder.pretrained:
        raise ConfigError("encoder.freeze=true needs a pretrained backbone: encoder=pretrained:PATH")
    if "/" not in cfg.env:
        raise ConfigError(f"env={cfg.env!r}: expected '<suite>/<task>', e.g. dmc/cheetah-run or gym/Hopper-v5")


@dataclass(frozen=True)
class Derived:
    """What follows from a config, computed in one place (:func:`derive`)."""

    num_envs: int  # parallel envs: ``num_envs``, or the agent's default (64 for ppo, 1 for sac/drqv2)
    batched: bool  # batched envs (``ssrl.envs.make_batched``): ppo, or sac/drqv2 with num_envs > 1
    updates_per_step: float  # sac/drqv2 on batched envs: updates per vector step (default: the single-env ratio)
    threads: int  # torch CPU threads (0: torch's default; batched runs: 1, the physics pool owns the cores)


def derive(cfg: TrainConfig) -> Derived:
    on_policy = isinstance(cfg.agent, PPOConfig)
    envs = cfg.num_envs or (64 if on_policy else 1)
    batched = on_policy or envs > 1
    updates = 0.0 if on_policy else cfg.updates_per_step or envs / cfg.agent.update_every
    return Derived(envs, batched, updates, cfg.threads or (1 if batched else 0))


PPO_REPRESENTATIONS = ("none", "spr", "masked", "world_model")  # state-observation objectives PPO trains


def _validate_ppo(cfg: TrainConfig) -> None:
    ppo = cfg.agent
    for key in ("num_steps", "epochs", "minibatches"):
        if getattr(ppo, key) <= 0:
            raise ConfigError(f"agent.{key}={getattr(ppo, key)}: must be positive")
    if derive(cfg).num_envs * ppo.num_steps < ppo.minibatches:
        raise ConfigError(f"agent.minibatches={ppo.minibatches} exceeds the {derive(cfg).num_envs * ppo.num_steps} "
                          "transitions of a rollout (num_envs * agent.num_steps)")
    if cfg.obs != "state":
        raise ConfigError(f"obs={cfg.obs}: agent=ppo runs batched envs with state observations; set obs=state")
    rep = cfg.representation
    if rep.name not in PPO_REPRESENTATIONS:
        raise ConfigError(f"representation={rep.name}: agent=ppo with obs=state takes representation="
                          f"{', '.join(PPO_REPRESENTATIONS)} (CURL contrasts augmented views of pixels)")
    if isinstance(rep, WorldModelConfig) and rep.intrinsic_coef > 0:
        raise ConfigError(f"representation.intrinsic_coef={rep.intrinsic_coef}: agent=ppo takes no intrinsic "
                          "reward; set representation.intrinsic_coef=0")
    if isinstance(rep, (SPRConfig, MaskedConfig, WorldModelConfig)) and rep.k > ppo.num_steps:
        raise ConfigError(f"representation.k={rep.k}: sequences come from one rollout, so k must be <= "
                          f"agent.num_steps={ppo.num_steps}")


