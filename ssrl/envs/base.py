"""What the single envs (dm_control, Gymnasium MuJoCo, MetaWorld) share: the agent's pixel view and video
frames from one camera, and the constructor's seed for the first reset."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ssrl.envs import gl


class SingleEnv:
    """Mixin: ``render_pixels()`` is the agent's (size, size, 3) view, ``render()`` a (render_size, render_size, 3)
    frame for videos, both drawn by ``_render(side)`` in the look ``render`` selects (``ssrl.envs.gl.set_look``).
    The seed given to the constructor seeds the first reset that passes none."""

    frame_stack = 1  # one frame per observation unless a FrameStack wrapper says otherwise
    max_episode_steps: float = float("inf")  # env steps (before action repeat) until an episode is truncated
    render_mode = "rgb_array"

    def _setup(self, model: Any, size: int, render_size: int, render: str, seed: int | None) -> None:
        gl.set_look(model, render, max(size, render_size))
        self.size, self.render_size = size, render_size
        self._seed = seed

    def _reset_seed(self, seed: int | None) -> int | None:
        """``seed``, or on the first reset without one the constructor's."""
        if seed is None:
            seed, self._seed = self._seed, None
        return seed

    def _render(self, size: int) -> NDArray[np.uint8]:
        raise NotImplementedError

    def render(self) -> NDArray[np.uint8]:
        """A (render_size, render_size, 3) frame for videos."""
        return self._render(self.render_size)

    def render_pixels(self) -> NDArray[np.uint8]:
        """The agent's (size, size, 3) view."""
        return self._render(self.size)
