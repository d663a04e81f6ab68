"""n-step returns, once, for every replay: from the ``n`` one-step rewards after a transition's observation and
where its episode ends, the truncated discounted return and the bootstrap discount."""

from __future__ import annotations

import torch


def nstep(rewards: torch.Tensor, ends: torch.Tensor, terminal: torch.Tensor, available: torch.Tensor,
          gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``B`` transitions from observations ``t``:

    - ``rewards`` (B, n): ``r_t .. r_{t+n-1}``, the reward received after each action (entries past the
      episode's end or the stored steps are ignored);
    - ``ends`` (B, n) bool: step ``t+i`` ended its episode (terminated or truncated);
    - ``terminal`` (B, n) bool: the episode terminated at step ``t+i`` (read where ``ends``);
    - ``available`` (B,): steps stored after ``t`` (the window stops there if no episode end comes first).

    Returns ``(reward, discount, m)``: ``m = min(n, steps to the episode's end, available)``, ``reward =
    sum_{i<m} gamma^i r_{t+i}`` and ``discount = gamma^m``, or 0 when the episode terminated within the ``m``
    steps; ``obs_{t+m}`` is what the bootstrap value is computed on. Computed in ``rewards``' dtype.
    """
    n = rewards.shape[1]
    i = torch.arange(n, device=rewards.device)
    first_end = torch.where(ends, i, n).amin(1)  # the step that ends the episode, n if none
    m = torch.where(first_end < n, first_end + 1, available.clamp(max=n))
    powers = torch.full((n,), gamma, dtype=rewards.dtype, device=rewards.device) ** i
    reward = torch.where(i < m[:, None], rewards * powers, 0.0).sum(1)
    terminated = terminal.gather(1, first_end.clamp(max=n - 1)[:, None])[:, 0] & (first_end < n)
    discount = torch.where(terminated, 0.0, torch.full_like(reward, gamma) ** m)
    return reward, discount, m
