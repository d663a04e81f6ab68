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
