"""The benchmarks' own consistency, checked without running them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_mutant_snippet_occurs_exactly_once_in_its_file(monkeypatch: pytest.MonkeyPatch):
    """A refactor that renames or duplicates the code a mutant edits leaves `benchmarks/mutants.py` unable to run
    at all; this catches it when the refactor lands."""
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "benchmarks" / "mutants.py")
    mutants = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mutants", mutants)  # its dataclasses look their module up there
    spec.loader.exec_module(mutants)
    assert mutants.MUTANTS
    try:
        mutants.check_snippets(mutants.MUTANTS)
    except SystemExit as e:  # check_snippets names the stale mutant
        pytest.fail(str(e))


def test_speed_bound_models_the_run_and_divides_by_each_floor(monkeypatch: pytest.MonkeyPatch):
    """`bench_bound.bound` against a hand-computed schedule: 10 updates of 2 s (1 s of kernels, 4 GFLOP each),
    20 training steps at 0.1 s env + 0.05 s acting, 40 evaluation steps at 0.1 s env + 0.025 s acting."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_bound", ROOT / "benchmarks" / "bench_bound.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    job = {"updates": 10, "update_s": 2.0, "kernel_s": 1.0, "update_gflop": 4.0, "train_steps": 20,
           "env_step_s": 0.1, "act_s": 0.05, "eval_steps": 40, "eval_act_s": 0.025}
    out = bench.bound(job, peak=8.0)
    assert out["model_s"] == pytest.approx(20 + 20 * 0.15 + 40 * 0.125)  # 28 s
    assert (out["floor_hidden_s"], out["floor_kernels_s"], out["floor_peak_s"]) == pytest.approx((20, 10, 5))
    assert (out["bound_hidden"], out["bound_kernels"], out["bound_peak"]) == pytest.approx((1.4, 2.8, 5.6))
