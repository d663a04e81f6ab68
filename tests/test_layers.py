"""The package's layering (docs/architecture.md): a module imports only from its own layer or the layers below.

Every ``import``/``from ... import`` in every module of ``ssrl`` counts, those inside functions included (a lazy
import is still a dependency). Imports of the package root (``import ssrl``, ``from ssrl import __version__``)
are allowed everywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ssrl"
# Bottom to top. A module's layer is its first-level name under ssrl/ (ssrl/config/schema.py -> "config").
LAYERS = ["errors", "files", "config", "envs", "nn", "data", "representations", "agents", "runtime", "experiments", "eval",
          "integrations", "cli", "__main__"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def layer(module: str) -> str | None:
    """``ssrl.data.dataset`` -> ``data``; the package root -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every ssrl import in ``source``, a module of ``package`` (relative
    imports are resolved against it)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "ssrl":  # `from ssrl import config` is an import of ssrl.config
                found += [(node.lineno, f"ssrl.{alias.name}") for alias in node.names
                          if f"ssrl.{alias.name}".split(".")[1] in RANK]
            else:
                found.append((node.lineno, name))
    return [(line, name) for line, name in found if name == "ssrl" or name.startswith("ssrl.")]


def imports_of(path: Path) -> list[tuple[int, str]]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports(path.read_text(), package)


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_layer():
    unplaced = {module_name(p) for p in modules() if layer(module_name(p)) not in RANK and module_name(p) != "ssrl"}
    assert not unplaced, f"modules outside the layers {LAYERS}: {sorted(unplaced)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: module_name(p))
def test_imports_point_down(path: Path):
    own = layer(module_name(path))
    if own is None:  # the package root may import anything lazily (ssrl.load_backbone)
        return
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} ({layer(name)} is above {own})"
              for line, name in imports_of(path) if layer(name) is not None and RANK.get(layer(name), len(LAYERS)) > RANK[own]]
    assert not upward, "\n".join(upward)


def test_finds_lazy_relative_and_root_imports():
    """The parser itself: imports inside functions, relative ones and ``from ssrl import <layer>`` are seen."""
    source = ("import numpy\nfrom ssrl import __version__, config\n"
              "def f():\n    from ssrl.experiments.offpolicy import Trainer\n    from ..agents import base\n")
    assert [name for _, name in imports(source, "ssrl.data")] == [
        "ssrl.config", "ssrl.experiments.offpolicy", "ssrl.agents"]
