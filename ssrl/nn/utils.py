"""Small network helpers shared by agents and representation modules."""

from __future__ import annotations

import ctypes
import re
import warnings
from typing import Any

import torch
from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, depth: int = 2) -> nn.Sequential:
    """``depth`` hidden ReLU layers of ``hidden_dim`` units, then a linear output."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(depth):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


def orthogonal_init(module: nn.Module) -> None:
    """DrQ-v2's initialisation: orthogonal weights (ReLU gain for convs), zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"))
        if module.bias is not None:
            module.bias.data.fill_(0.0)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- tau * source + (1 - tau) * target`` (an EMA of the source's parameters)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off: the start of an EMA target network."""
    import copy

    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


def adam(params: Any, lr: float, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch build has it (same maths, one kernel for all parameters:
    ~7x faster steps than the default per-tensor loop on a 2-core CPU)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except RuntimeError:  # fused Adam needs torch >= 2.4 on CPU
        return torch.optim.Adam(params, lr=lr, **kwargs)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters


def keep_freed_memory(keep: bool) -> None:
    """Whether glibc's malloc keeps freed memory in the process for reuse (``speed.keep_memory``).

    glibc maps every block above 32 MB (its largest mmap threshold) freshly from the OS and unmaps it when freed,
    so each of a pixel update's large tensors (conv activations and their gradients, tens of MB) page-faults
    new pages on every update. With ``keep``, every block comes from the heap and freed memory is never trimmed:
    the pages are reused, and the process keeps its peak memory. ``keep=False`` sets glibc's settled defaults
    (32 MB mmap threshold, 64 MB trim threshold). Nothing happens where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_MAX, 0 if keep else 65536)
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1 if keep else 64 << 20)


def compile_or_eager(module: nn.Module, name: str) -> None:
    """``torch.compile`` ``module``'s forward in place (its state_dict keys do not change). Compilation happens
    at the first call; if it fails there (no C++ compiler, an unsupported op, ...), warn once naming ``name``
    and run eagerly from then on."""
    module.compile()
    compiled = module._compiled_call_impl

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except Exception as e:  # any compiler failure: the eager module computes the same thing
            module._compiled_call_impl = None
            first_line = str(e).splitlines()[0] if str(e) else ""
            warnings.warn(f"torch.compile of {name} failed ({type(e).__name__}: {first_line}); "
                          f"running it eagerly (speed.compile=false silences this)", RuntimeWarning, stacklevel=2)
            return module._call_impl(*args, **kwargs)

    module._compiled_call_impl = call


_SCHEDULE = re.compile(r"^\s*linear\(\s*([^,]+),\s*([^,]+),\s*([^)]+)\)\s*$")


def schedule(spec: str | float, frame: int) -> float:
    """Evaluate a schedule at ``frame``: a constant (``"0.2"``) or ``"linear(start,end,duration_frames)"``."""
    if isinstance(spec, (int, float)):
        return float(spec)
    try:
        return float(spec)
    except ValueError:
        pass
    match = _SCHEDULE.match(spec)
    if not match:
        raise ValueError(f"bad schedule '{spec}': expected a number or 'linear(start,end,duration_frames)'")
    start, end, duration = (float(g) for g in match.groups())
    mix = min(max(frame / duration, 0.0), 1.0)
    return (1.0 - mix) * start + mix * end
