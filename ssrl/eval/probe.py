"""Does a representation know the physics? Collect frames with a random policy, train an encoder's
self-supervised objective on them, then fit a ridge (linear) probe from frozen features to the true state
and score it on held-out episodes.

The probe's target is the task's state vector (``obs=state``: positions, with hinge angles as cos/sin where
the task does so, and velocities), a smooth function of ``info["physics_state"]``, read as the frames determine it
(``pixel_state``). The raw physics state is kept too, but its unbounded hinge angles (a pole that spun twice) are
not a function of any image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ssrl.agents import OffPolicyAgent
from ssrl.data import ReplayBuffer, to_torch
from ssrl.experiments.pretrain import pretrain_step


@dataclass
class ProbeData:
    """Frames from a random policy: a replay buffer to train on, plus every observation with its state (as the
    frames determine it: ``pixel_state``), physics state and episode index (for an episode-wise train/test split)."""

    replay: ReplayBuffer
    obs: np.ndarray
    states: np.ndarray
    physics: np.ndarray
    episodes: np.ndarray
    observation_space: object
    action_space: object


def collect(env_id: str, episodes: int, *, size: int = 48, frame_stack: int = 3, action_repeat: int | None = None,
            max_steps: int | None = None, seed: int = 0) -> ProbeData:
    """``episodes`` random-policy episodes (at most ``max_steps`` agent steps each) of pixel observations."""
    from ssrl.envs import make

    env = make(env_id, obs="pixels+state", size=size, frame_stack=frame_stack, action_repeat=action_repeat)
    pixel_space = env.observation_space["pixels"]
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(pixel_space, env.action_space, capacity=10**6, frame_stack=frame_stack, seed=seed)
    obs_list, states, physics, episode_ids = [], [], [], []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed * 1000 + episode)
        replay.add_first(obs["pixels"])
        done, steps = False, 0
        while True:
            obs_list.append(obs["pixels"])
            states.append(obs["state"])
            physics.append(info["physics_state"])
            episode_ids.append(episode)
            if done:
                break
            action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            done = terminated or truncated or (max_steps is not None and steps >= max_steps)
            replay.add(action, float(reward), obs["pixels"], terminated, bool(truncated or done))
    env.close()
    return ProbeData(replay, np.stack(obs_list), pixel_state(env_id, np.stack(states)), np.stack(physics),
                     np.array(episode_ids), pixel_space, env.action_space)


def from_dataset(path: str, frame_stack: int | None = None) -> ProbeData:
    """Every observation of a dataset written by ``ssrl collect`` (pixels stacked as the replay stacks them) with
    its state, physics state (``(N, 0)`` where the dataset has none, e.g. ``ssrl transfer``'s demonstrations) and
    episode index; ``replay`` samples the dataset's pixels."""
    from ssrl.data.dataset import Dataset, episode_arrays, info

    arrays = episode_arrays(path, frame_stack)
    data = Dataset(path, "pixels", seed=0)
    physics = arrays.get("obs/physics_state", np.zeros((len(arrays["episode"]), 0)))
    tasks = set(info(path)["tasks"])
    task = tasks.pop() if len(tasks) == 1 else None  # a merged multi-task dataset keeps its states as stored
    return ProbeData(data.replay, arrays["obs/pixels"], pixel_state(task, arrays["obs/state"]), physics,
                     arrays["episode"], data.observation_space, data.action_space)


def pixel_state(env_id: str | None, states: np.ndarray) -> np.ndarray:
    """``states`` (rows of the task's state vector) as its frames determine them. finger-spin hides the spinner's
    tip marker, and the spinner (two equal capsules) looks the same turned half a turn, so the tip's (x, z) about
    the hinge and its negation render the same frames: there the tip is read as its doubled angle,
    ``(x^2 - z^2, 2xz) / (x^2 + z^2)`` (cos 2a, sin 2a). Other tasks' states are returned as they are."""
    states = np.asarray(states, dtype=np.float64)
    if env_id != "dmc/finger-spin":
        return states
    x, z = states[:, 2], states[:, 3]  # position: proximal, distal, tip x, tip z
    out = states.copy()
    r2 = x * x + z * z
    out[:, 2], out[:, 3] = (x * x - z * z) / r2, 2 * x * z / r2
    return out


def position_dims(env_id: str) -> np.ndarray:
    """A boolean mask over the task's state vector: True for entries that describe the configuration (positions,
    angles, orientations, relative positions), False for velocities and contact/force sensors."""
    from ssrl.envs import make

    env = make(env_id, obs="state")
    layout = env.get_wrapper_attr("state_layout")
    env.close()
    rates = ("velocity", "touch", "force", "torque")
    return np.concatenate([np.full(size, not any(word in name for word in rates)) for name, size in layout.items()])


def mlp_fit(x: np.ndarray, y: np.ndarray, hidden: int = 256, steps: int = 1000, lr: float = 1e-3,
            weight_decay: float = 1e-2, seed: int = 0):
    """A small MLP probe (one hidden layer, ReLU) on standardised inputs and targets, full-batch AdamW, stopped
    early on a random 20% of the rows (kept out of the fit); returns ``predict(x) -> y``."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    y_mu, y_sd = y.mean(0), y.std(0) + 1e-8
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    inputs, targets = torch.from_numpy((x - mu) / sd).float(), torch.from_numpy((y - y_mu) / y_sd).float()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    fit, held = order[: int(0.8 * len(x))], order[int(0.8 * len(x)) :]
    best, best_state = float("inf"), None
    for step in range(steps):
        loss = (net(inputs[fit]) - targets[fit]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 19:
            with torch.no_grad():
                val = float((net(inputs[held]) - targets[held]).pow(2).mean())
            if val < best:
                best, best_state = val, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)

    @torch.no_grad()
    def predict(x_new: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy((x_new - mu) / sd).float()).double().numpy() * y_sd + y_mu

    return predict


def probe_scores(x: np.ndarray, states: np.ndarray, test: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
    """Held-out R^2 of a linear (ridge) and an MLP probe fitted on the ``~test`` rows, on the position entries of
    ``states`` and on all of them, plus each entry's R^2 (``*_r2_dims``; entries constant in the training rows are
    dropped)."""
    keep = states[~test].std(0) > 1e-8
    y, positions = states[:, keep], positions[keep]
    scores: dict[str, Any] = {}
    for name, fit in (("linear", ridge_fit), ("mlp", mlp_fit)):
        dims = r2_dims(fit(x[~test], y[~test])(x[test]), y[test])
        scores |= {f"{name}_r2_positions": float(dims[positions].mean()), f"{name}_r2_all": float(dims.mean()),
                   f"{name}_r2_dims": [round(float(d), 4) for d in dims]}
    return scores


@torch.no_grad()
def features(encoder: nn.Module, augment: nn.Module | None, obs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Frozen features of ``obs`` (the encoder's eval view, as ``act()`` sees it; ``augment=None``: as given)."""
    was_training = encoder.training
    encoder.eval()
    view = augment.eval_view if augment is not None else (lambda x: x)
    out = [encoder(view(to_torch(obs[i : i + batch_size], "cpu"))).numpy()
           for i in range(0, len(obs), batch_size)]
    encoder.train(was_training)
    return np.concatenate(out).astype(np.float64)


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float = 10.0):
    """A ridge regression on standardised inputs and targets (closed form); returns ``predict(x) -> y``."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    y_mu, y_sd = y.mean(0), y.std(0) + 1e-8
    a = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    weights = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ ((y - y_mu) / y_sd))
    return lambda x_new: np.hstack([(x_new - mu) / sd, np.ones((len(x_new), 1))]) @ weights * y_sd + y_mu


def r2_dims(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """R^2 of each target dimension that varies."""
    keep = target.std(0) > 1e-8
    residual = ((prediction[:, keep] - target[:, keep]) ** 2).sum(0)
    total = ((target[:, keep] - target[:, keep].mean(0)) ** 2).sum(0)
    return 1.0 - residual / total


def r2(prediction: np.ndarray, target: np.ndarray) -> float:
    """R^2 averaged over the target dimensions that vary."""
    return float(np.mean(r2_dims(prediction, target)))


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             alpha: float = 10.0) -> float:
    """Held-out R^2 of a ridge regression, averaged over the target dimensions that vary in the training set."""
    keep = y_train.std(0) > 1e-8
    return r2(ridge_fit(x_train, y_train[:, keep], alpha)(x_test), y_test[:, keep])


def probe_r2(encoder: nn.Module, augment: nn.Module, data: ProbeData, test_episodes: int = 1,
             alpha: float = 10.0, folds: int = 1) -> float:
    """Held-out R^2 of a linear probe from frozen features to the physics state. ``folds=1``: the last
    ``test_episodes`` episodes are the test set. ``folds=n``: episode-wise n-fold cross-validation - each block
    of consecutive episodes is predicted by a probe fitted on the others, and R^2 is scored once on these
    out-of-fold predictions of every frame (less noisy than one held-out episode)."""
    x = features(encoder, augment, data.obs)
    if folds == 1:
        test = data.episodes >= data.episodes.max() + 1 - test_episodes
        return ridge_r2(x[~test], data.states[~test], x[test], data.states[test], alpha)
    blocks = np.array_split(np.unique(data.episodes), folds)
    assert all(len(b) for b in blocks), f"folds={folds} needs at least {folds} episodes"
    keep = data.states.std(0) > 1e-8
    y = data.states[:, keep]
    prediction = np.empty_like(y)
    for block in blocks:
        test = np.isin(data.episodes, block)
        prediction[test] = ridge_fit(x[~test], y[~test], alpha)(x[test])
    return r2(prediction, y)


def pretrain(agent: OffPolicyAgent, replay: ReplayBuffer, updates: int) -> list[float]:
    """``updates`` steps of the agent's representation objective alone (no RL losses, batches of
    ``agent.cfg.batch_size``), through ``ssrl pretrain``'s step; returns the losses."""
    assert agent.representation is not None, "pretrain needs representation=<module>"
    return [pretrain_step(agent.representation, agent.encoder, agent.augment, replay, agent.repr_opt,
                          agent.cfg.batch_size, agent.device)["loss"] for _ in range(updates)]
