"""`dm_control.utils.rewards.tolerance` on torch tensors (batched over environments)."""

from __future__ import annotations

import math

import torch


def _sigmoid(x: torch.Tensor, value_at_1: float, sigmoid: str) -> torch.Tensor:
    """dm_control's `_sigmoids`: 1 at x=0, `value_at_1` at |x|=1."""
    if sigmoid in ("cosine", "linear", "quadratic"):
        if not 0 <= value_at_1 < 1:
            raise ValueError(f"value_at_margin must be in [0, 1) for {sigmoid}, got {value_at_1}")
    elif not 0 < value_at_1 < 1:
        raise ValueError(f"value_at_margin must be in (0, 1) for {sigmoid}, got {value_at_1}")
    zero = torch.zeros_like(x)
    if sigmoid == "gaussian":
        return torch.exp(-0.5 * (x * math.sqrt(-2 * math.log(value_at_1))) ** 2)
    if sigmoid == "hyperbolic":
        return 1 / torch.cosh(x * math.acosh(1 / value_at_1))
    if sigmoid == "long_tail":
        return 1 / ((x * math.sqrt(1 / value_at_1 - 1)) ** 2 + 1)
    if sigmoid == "reciprocal":
        return 1 / (x.abs() * (1 / value_at_1 - 1) + 1)
    if sigmoid == "cosine":
        scaled = x * math.acos(2 * value_at_1 - 1) / math.pi
        return torch.where(scaled.abs() < 1, (1 + torch.cos(math.pi * scaled)) / 2, zero)
    if sigmoid == "linear":
        scaled = x * (1 - value_at_1)
        return torch.where(scaled.abs() < 1, 1 - scaled, zero)
    if sigmoid == "quadratic":
        scaled = x * math.sqrt(1 - value_at_1)
        return torch.where(scaled.abs() < 1, 1 - scaled**2, zero)
    if sigmoid == "tanh_squared":
        return 1 - torch.tanh(x * math.atanh(math.sqrt(1 - value_at_1))) ** 2
    raise ValueError(f"Unknown sigmoid {sigmoid!r}")


def tolerance(
    x: torch.Tensor,
    bounds: tuple[float, float] = (0.0, 0.0),
    margin: float = 0.0,
    sigmoid: str = "gaussian",
    value_at_margin: float = 0.1,
) -> torch.Tensor:
    """1 inside `bounds`, falling off with `sigmoid` outside to `value_at_margin` at distance `margin`."""
    lower, upper = bounds
    if lower > upper:
        raise ValueError(f"bounds: lower {lower} > upper {upper}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    in_bounds = (lower <= x) & (x <= upper)
    one = torch.ones_like(x)
    if margin == 0:
        return torch.where(in_bounds, one, torch.zeros_like(x))
    distance = torch.where(x < lower, lower - x, x - upper) / margin
    return torch.where(in_bounds, one, _sigmoid(distance, value_at_margin, sigmoid))
