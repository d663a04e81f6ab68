"""Divergence guard: stop a run at the update whose metrics went non-finite (or a loss beyond
``guard.max_abs_loss``) and before a non-finite action reaches the environment.

On CPU every check is immediate (the values are on the host already). On a GPU the update's metrics are
stacked on the device and looked at every ``guard.check_every`` updates, one sync for all of them; the error
still names the first bad update.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ssrl.config.schema import GuardConfig
from ssrl.errors import DivergenceError


class Guard:
    """Checks update metrics (:meth:`metrics`), actions (:meth:`action`) and parameters (:meth:`parameters`)."""

    def __init__(self, cfg: GuardConfig, device: torch.device, namespace: str = "train", unit: str = "frame") -> None:
        self.max_abs = cfg.max_abs_loss or math.inf
        self.device = device
        self.every = 1 if device.type == "cpu" else cfg.check_every
        self.namespace, self.unit = namespace, unit
        self.pending: list[tuple[int, list[str], torch.Tensor]] = []

    def metrics(self, values: dict[str, Any], frame: int) -> None:
        """Check one update's metrics (tensors or floats; names with ``loss`` are bounded by ``max_abs_loss``)."""
        if values:
            stacked = torch.stack([torch.as_tensor(v, device=self.device).detach().float().reshape(())
                                   for v in values.values()])
            self.pending.append((frame, list(values), stacked))
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Look at the metrics not checked yet (one device sync); the first bad one is a :class:`DivergenceError`."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        values = iter(torch.cat([v for _, _, v in pending]).tolist())
        for frame, names, _ in pending:
            for name, value in zip(names, values):
                where = f"{self.namespace}/{name} is {value:.3g} at {self.unit} {frame:,}"
                if not math.isfinite(value):
                    raise DivergenceError(f"{where}: training diverged")
                if "loss" in name and abs(value) > self.max_abs:
                    raise DivergenceError(f"{where}, beyond guard.max_abs_loss={self.max_abs:g}: training diverged")

    def action(self, action: np.ndarray | torch.Tensor, frame: int) -> None:
        """Refuse a non-finite action before it reaches the env (on a GPU: at the next check)."""
        if isinstance(action, np.ndarray):
            finite = bool(np.isfinite(action).all())
        elif self.every == 1:
            finite = bool(torch.isfinite(action).all())
        else:
            self.metrics({"action": torch.where(torch.isfinite(action).all(), 0.0, math.nan)}, frame)
            return
        if not finite:
            raise DivergenceError(f"the policy's action is not finite at {self.unit} {frame:,}: training diverged")

    def parameters(self, module: torch.nn.Module, frame: int) -> None:
        """Refuse non-finite weights (an update whose loss was finite but whose step was not)."""
        params = [p.detach().sum() for p in module.parameters()]
        if params:
            self.metrics({"weights": torch.stack(params).sum()}, frame)
