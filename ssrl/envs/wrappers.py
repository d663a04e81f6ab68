"""Generic wrappers: action repeat, pixel observations and channel-axis frame stacking."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray


class ActionRepeat(gym.Wrapper[Any, Any, Any, Any]):
    """Repeats each action `action_repeat` times, summing rewards; stops early when the episode ends."""

    def __init__(self, env: gym.Env[Any, Any], action_repeat: int) -> None:
        super().__init__(env)
        self.action_repeat = action_repeat
        if "render_fps" in env.metadata:
            self.metadata = {**env.metadata, "render_fps": env.metadata["render_fps"] / action_repeat}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Steps the wrapped env up to `action_repeat` times with the same action."""
        total = 0.0
        for _ in range(self.action_repeat):
            observation, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return observation, total, terminated, truncated, info


class PixelObservation(gym.ObservationWrapper[Any, Any, Any]):
    """Replaces (`"pixels"`) or joins (`"pixels+state"`) the observation with a channels-first frame.

    `render_pixels` returns an (H, W, 3) uint8 frame of the current state; it is called once per
    observation, i.e. once per agent step.
    """

    def __init__(
        self, env: gym.Env[Any, Any], render_pixels: Callable[[], NDArray[np.uint8]], size: int, obs: str
    ) -> None:
        super().__init__(env)
        self._render_pixels = render_pixels
        self._with_state = obs == "pixels+state"
        pixels = gym.spaces.Box(0, 255, (3, size, size), np.uint8)
        self.observation_space = (
            gym.spaces.Dict({"pixels": pixels, "state": env.observation_space}) if self._with_state else pixels
        )

    def observation(self, observation: Any) -> Any:
        """Renders the agent's view of the current state."""
        pixels = np.ascontiguousarray(self._render_pixels().transpose(2, 0, 1))
        return {"pixels": pixels, "state": observation} if self._with_state else pixels


class FrameStack(gym.ObservationWrapper[Any, Any, Any]):
    """Concatenates the last `frame_stack` frames on the channel axis, oldest first.

    Stacks the observation, or only its `"pixels"` entry for dict observations. At reset
    the first frame is repeated (like `FrameStackObservation(padding_type="reset")`).
    """

    def __init__(self, env: gym.Env[Any, Any], frame_stack: int) -> None:
        super().__init__(env)
        self.frame_stack = frame_stack
        self._frames: deque[NDArray[np.uint8]] = deque(maxlen=frame_stack)
        space = env.observation_space
        pixels = space["pixels"] if isinstance(space, gym.spaces.Dict) else space
        channels, *shape = pixels.shape  # type: ignore[misc]
        stacked = gym.spaces.Box(0, 255, (channels * frame_stack, *shape), np.uint8)
        self.observation_space = (
            gym.spaces.Dict({**space.spaces, "pixels": stacked}) if isinstance(space, gym.spaces.Dict) else stacked
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Resets and fills the stack with the first frame."""
        self._frames.clear()
        return super().reset(seed=seed, options=options)

    def observation(self, observation: Any) -> Any:
        """Pushes the newest frame and returns the stack."""
        is_dict = isinstance(observation, dict)
        frame = observation["pixels"] if is_dict else observation
        if self._frames:
            self._frames.append(frame)
        else:  # just reset
            self._frames.extend([frame] * self.frame_stack)
        stacked = np.concatenate(self._frames)
        return {**observation, "pixels": stacked} if is_dict else stacked
