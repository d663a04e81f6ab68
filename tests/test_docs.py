"""Every code block of README.md and docs/*.md runs as written.

Blocks are fenced with a language: ``python`` (run as a script in a temporary directory, one per Markdown file,
in order, so a block may use what an earlier one of its file wrote), ``bash`` (each command must be ``ssrl ...``
or ``python -m ssrl.cli ...``; run in that directory through ``ssrl.cli.main``), ``yaml`` (parsed) or ``text``
(not code: layouts, usage summaries). A block whose first line is ``# NAME.py`` or ``# NAME.yaml`` is also saved
as that file there (``ssrl sweep sweep.yaml`` finds the spec shown above it).

Budgets: the commands run with the tiny budgets :func:`tiny` substitutes or appends (one episode or rollout,
one eval episode, small batches and networks, a few pretraining steps, ``--reps 50`` for reports), so a
documented 100k-frame run takes seconds. A grid (comma lists, ``seeds=N``) is checked whole (every run's config
parses) and runs its first point, one seed, as a multirun child process. ``../shared/reference/drqv2_curves`` is the reference folder of
this development machine; where it is missing a small synthetic one stands in.

A block that cannot run here (a GPU, a cluster, package installs, hours of compute, a benchmark) is marked in the
Markdown by ``<!-- no-test: reason -->`` on the line before it; its reason is listed as a skip
(``pytest -ra``), and its ``ssrl train``/``ssrl config``/``ssrl sweep`` commands are still checked without
running: every run of a grid or suite parses into a valid config, a sweep spec loads, a script it names exists.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
LANGUAGES = ("python", "bash", "yaml", "text")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
NO_TEST = re.compile(r"<!--\s*no-test:\s*(.*?)\s*-->\s*$")
SAVED = re.compile(r"^#\s*(\S+\.(?:py|ya?ml))\b")


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    code: str
    skip: str | None  # the no-test reason

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(doc: str) -> list[Block]:
    text = (ROOT / doc).read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = NO_TEST.search(before)
        out.append(Block(doc, text[: m.start()].count("\n") + 1, m.group(1).strip(), m.group(2),
                         skip.group(1) if skip else None))
    return out


def commands(code: str) -> list[list[str]]:
    """The shell commands of a block: continuation lines joined, comments dropped, ``&&`` chains split."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            out.append(tokens[:cut])
            tokens = tokens[cut + 1:]
    return [c for c in out if c]


def ssrl_argv(command: list[str]) -> list[str] | None:
    """``ssrl ARGS`` / ``.venv/bin/ssrl ARGS`` / ``python -m ssrl.cli ARGS`` -> ARGS; anything else -> None."""
    if Path(command[0]).name == "ssrl":
        return command[1:]
    if Path(command[0]).name.startswith("python") and command[1:3] == ["-m", "ssrl.cli"]:
        return command[3:]
    return None


# ------------------------------------------------------------------------------------------------ budgets
def _set(args: list[str], values: dict[str, str]) -> list[str]:
    """``args`` with each key of ``values`` replaced (or appended when absent)."""
    out = [f"{a.partition('=')[0]}={values[a.partition('=')[0]]}" if a.partition("=")[0] in values else a
           for a in args]
    given = {a.partition("=")[0] for a in args}
    return out + [f"{k}={v}" for k, v in values.items() if k not in given]


def _is_list(key: str, value: str) -> bool:
    from ssrl.experiments.multirun import SINGLE_VALUED, split_values

    return key not in SINGLE_VALUED and len(split_values(value)) > 1


def tiny(argv: list[str]) -> list[str]:
    """A documented command with a budget of seconds (the keys it sets are listed in this module's docstring)."""
    command, args = argv[0], argv[1:]
    pairs = dict(a.split("=", 1) for a in args if "=" in a)
    if command in ("train", "ppo"):
        if command == "train":
            check_without_running(argv, " ".join(argv))  # every run of a grid parses
        values = {"frames": "1", "eval_episodes": "1", "eval_every": "1000000000", "progress": "false",
                  "threads": "1"}
        if "seeds" in pairs or any(_is_list(k, v) for k, v in pairs.items()):  # a grid: its first run, still
            values["seeds"] = "1"  # as a multirun child process (the whole grid is checked before it runs)
            values |= {k: v.split(",")[0] for k, v in pairs.items() if _is_list(k, v)}
        if command != "ppo" and pairs.get("agent") != "ppo":
            values |= {"seed_frames": "900", "replay_capacity": "5000", "agent.batch_size": "16",
                       "agent.hidden_dim": "32"}
            if int(pairs.get("num_envs", "0")) > 1:
                values["updates_per_step"] = "0.05"
            if "encoder" not in pairs:
                values |= {"encoder.num_filters": "8", "encoder.num_layers": "2"}
        return [command, *_set(args, values)]
    if command == "collect":
        return [command, *_set(args, {"frames": "300", "progress": "false"})]
    if command == "pretrain":
        return [command, *_set(args, {"steps": "4", "batch_size": "16", "log_every": "2", "checkpoint_every": "2",
                                      "warmup": "0", "progress": "false"})]
    if command == "transfer":
        return [command, *_set(args, {"demos": "1", "seeds": "1", "rollouts": "1", "steps": "5", "horizon": "20",
                                      "batch_size": "8", "progress": "false"})]
    if command == "report":
        return [*argv, "--reps", "50"]
    return argv


# ------------------------------------------------------------------------------------------------ checks
def check_without_running(argv: list[str], where: str) -> None:
    """What a no-test block's ssrl command can be checked for cheaply."""
    from ssrl import config as config_lib
    from ssrl.experiments import multirun, sweep

    command, args = argv[0], argv[1:]
    if command == "ppo":
        command, args = "train", ["agent=ppo", "obs=state", *args]
    if command == "train":
        if multirun.is_multirun(args):
            assert multirun.plan(multirun.expand(args)), where
        else:
            config_lib.parse_overrides(args)
    elif command == "config":
        config_lib.parse_overrides([a for a in args if not a.startswith("--")])
    elif command == "sweep":
        sweep.load_spec(Path(args[0]))


def run_ssrl(argv: list[str], where: str) -> None:
    import torch

    from ssrl.cli import main

    threads = torch.get_num_threads()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    finally:
        torch.set_num_threads(threads)
    assert code == 0, f"{where}: `ssrl {' '.join(argv)}` exited {code}"


def run_python(block: Block, cwd: Path) -> None:
    script = cwd / f"_{Path(block.doc).stem}_{block.line}.py"
    script.write_text(block.code)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{block.where}: the python block failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _reference(work: Path) -> None:
    """``../shared/reference/drqv2_curves`` relative to ``work``: this machine's, else a synthetic stand-in."""
    target = work.parent / "shared"
    real = ROOT.parent / "shared" / "reference" / "drqv2_curves"
    if real.is_dir():
        target.symlink_to(ROOT.parent / "shared", target_is_directory=True)
        return
    curves = target / "reference" / "drqv2_curves"
    curves.mkdir(parents=True)
    for task in ("cartpole_swingup", "cheetah_run", "walker_walk"):
        rows = [f"{i},DrQ-v2,{task},{s},{f},{f / 1000}" for i, (s, f) in
                enumerate((s, f) for s in (1, 2) for f in range(0, 100_001, 20_000))]
        (curves / f"dmc_{task}.csv").write_text(",agent,task,seed,frame,episode_reward\n" + "\n".join(rows) + "\n")


@contextlib.contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ------------------------------------------------------------------------------------------------ tests
ALL = [b for doc in DOCS for b in blocks(doc)]


def test_every_block_has_a_language_and_every_no_test_mark_a_reason():
    untagged = [b.where for b in ALL if b.lang not in LANGUAGES]
    assert not untagged, f"code blocks need one of {LANGUAGES} after the ```: {untagged}"
    assert all(b.skip.strip() for b in ALL if b.skip is not None)
    assert len(ALL) > 40  # the extractor found the blocks


@pytest.mark.parametrize("block", [b for b in ALL if b.skip], ids=lambda b: b.where)
def test_blocks_marked_no_test(block):
    pytest.skip(f"{block.where} no-test: {block.skip}")


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_code_blocks_run_as_written(doc, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    _reference(work)
    for block in ALL:  # files the docs show (a sweep spec, a suite) are there for every doc that names them
        saved = SAVED.match(block.code)
        if saved and block.lang == "yaml":
            (work / saved.group(1)).write_text(block.code)
    with _cwd(work):
        for block in blocks(doc):
            saved = SAVED.match(block.code)
            if saved and block.lang in ("python", "yaml"):
                (work / saved.group(1)).parent.mkdir(parents=True, exist_ok=True)
                (work / saved.group(1)).write_text(block.code)
            if block.lang == "yaml":
                yaml.safe_load(block.code)
            elif block.lang == "python" and not block.skip:
                run_python(block, work)
            elif block.lang == "bash":
                for command in commands(block.code):
                    argv = ssrl_argv(command)
                    if block.skip:
                        if argv and not any("$" in t for t in argv):  # shell variables: a loop's body
                            check_without_running(argv, block.where)
                        scripts = [t for t in command if t.startswith(("benchmarks/", "tests/"))]
                        assert all((ROOT / s.split("::")[0]).exists() for s in scripts), (block.where, scripts)
                        continue
                    assert argv, (f"{block.where}: `{' '.join(command)}` is not an ssrl command; make it one or "
                                  "mark the block <!-- no-test: reason -->")
                    run_ssrl(tiny(argv), block.where)
