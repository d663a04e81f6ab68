"""Reports over many runs: ``ssrl report RUN_DIRS... --out DIR [--reference DIR]``.

Runs are found by their ``config.yaml`` and ``eval.csv`` (any depth below the given paths) and grouped by task
(``env``) and method (``agent.name`` and ``representation.name`` by default). Statistics follow Agarwal et al.
(2021) through ``rliable``: IQM, median, mean and optimality gap of normalised final scores with 95%
stratified-bootstrap confidence intervals, performance profiles and probability of improvement. Learning curves
show the mean over seeds with a 95% bootstrap band; published reference curves (e.g. DrQ-v2's
``dmc_<domain>_<task>.csv`` files, columns ``agent, task, seed, frame, episode_reward``) are drawn beside them and
enter the aggregates as a method of their own, read at the same frames. Tasks of the CURL paper's Table 1
(:mod:`ssrl.experiments.published`) get a table of final returns beside the published numbers, headed by a
``CPU proxy`` warning when compared below the paper's 100k frames. Writes PNG and SVG figures, ``summary.md`` and
``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ssrl.errors import ConfigError, require_extra
from ssrl.experiments import published
from ssrl.runtime import meta

DMC_MAX_SCORE = 1000.0
METRICS = ("IQM", "Median", "Mean", "Optimality gap")
DPI = 120  # figure pixels = figsize (inches) * DPI
# Reference file names whose domain differs from dm_control's (DrQ-v2 calls ball_in_cup "cup").
REFERENCE_ALIASES = {"ball_in_cup": "cup"}


@dataclass
class Curve:
    """One seed's evaluation curve on one task."""

    task: str
    method: str
    seed: int
    frames: np.ndarray
    returns: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)  # batch size and image size (proxy label)


# ------------------------------------------------------------------------------------------------ loading
def _lookup(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def find_runs(paths: list[Path], group_by: tuple[str, ...] = ("agent.name", "representation.name")) -> list[Curve]:
    """Every run (a directory with ``config.yaml`` and a non-empty ``eval.csv``) at or below ``paths``."""
    dirs: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        dirs += [c.parent for c in sorted(path.rglob("config.yaml")) if (c.parent / "eval.csv").exists()]
    curves = []
    for run_dir in dict.fromkeys(dirs):
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        rows = meta.read_eval(run_dir)
        if rows:
            method = "-".join(str(_lookup(cfg, k)) for k in group_by)
            curves.append(Curve(str(cfg.get("env")), method, int(cfg.get("seed", 0)),
                                np.array([r["frame"] for r in rows]), np.array([r["episode_reward"] for r in rows]),
                                {"batch": _lookup(cfg, "agent.batch_size"), "size": cfg.get("size")}))
    if not curves:
        raise FileNotFoundError(f"no runs (config.yaml + eval.csv) under {', '.join(map(str, paths))}")
    return curves


def reference_file(directory: Path, task: str) -> Path:
    """``dmc/ball_in_cup-catch`` -> ``<directory>/dmc_cup_catch.csv``."""
    suite, _, name = task.partition("/")
    domain, _, sub = name.partition("-")
    return directory / f"{suite}_{REFERENCE_ALIASES.get(domain, domain)}_{sub}.csv"


def load_reference(directory: Path, tasks: list[str]) -> list[Curve]:
    """Published per-seed curves for ``tasks`` found in ``directory`` (tasks without a file are skipped)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"--reference {directory}: not a directory")
    curves = []
    for task in tasks:
        path = reference_file(directory, task)
        if not path.exists():
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        for (agent, seed), group in itertools.groupby(sorted(rows, key=lambda r: (r["agent"], int(r["seed"]),
                                                                                  float(r["frame"]))),
                                                      key=lambda r: (r["agent"], int(r["seed"]))):
            group = list(group)
            curves.append(Curve(task, f"{agent} (published)", seed, np.array([float(r["frame"]) for r in group]),
                                np.array([float(r["episode_reward"]) for r in group])))
    return curves


def max_score(task: str, override: float | None) -> float:
    """The score that normalises ``task`` to [0, 1]: ``override``, else 1000 for dm_control, else 1 (raw)."""
    if override:
        return override
    return DMC_MAX_SCORE if task.startswith("dmc/") else 1.0


# ------------------------------------------------------------------------------------------------ numbers
def _quiet(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Hide the FutureWarning rliable triggers by passing arch's deprecated ``random_state`` (numbers unaffected)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            return fn(*args, **kwargs)

    return wrapper


def reaches(curves: list[Curve], task: str, method: str, frame: float) -> bool:
    """Whether every curve of ``method`` on ``task`` has an evaluation at or after ``frame`` (so a value there is
    measured or interpolated between two evaluations, never extrapolated)."""
    group = [c for c in curves if c.task == task and c.method == method]
    return bool(group) and min(c.frames[-1] for c in group) >= frame


def notes(curves: list[Curve], runs: list[Curve], methods: list[str], references: list[str],
          single: list[str]) -> list[str]:
    """What a reader of the report must know: one-seed methods, how reference curves are read."""
    out = []
    if single:
        out.append(f"1 seed: no CI for {', '.join(single)} (an interval over one run is a point).")
    for ref in references:
        group = [c for c in curves if c.method == ref]
        out.append(f"{reference_label(ref, group)}: read at each task's frame by linear interpolation between its "
                   "published evaluations, and left out where they stop before that frame.")
    return out


def final_frame(curves: list[Curve], task: str, methods: list[str]) -> float:
    """The last frame every run of ``methods`` on ``task`` reached (scores compare at the same frame)."""
    return min(c.frames[-1] for c in curves if c.task == task and c.method in methods)


def score_matrices(curves: list[Curve], tasks: list[str], methods: list[str], at: dict[str, Any],
                   normalise: dict[str, float]) -> dict[str, np.ndarray]:
    """``{method: scores[run, task]}``: each run's return at frame ``at[task]`` (linear interpolation between
    evaluations), divided by ``normalise[task]``; ``[run, task, frame]`` when ``at[task]`` is an array of frames.
    Every task keeps the method's smallest seed count."""
    out = {}
    for method in methods:
        per_task = [[np.interp(at[t], c.frames, c.returns) / normalise[t]
                     for c in sorted(curves, key=lambda c: c.seed) if c.task == t and c.method == method]
                    for t in tasks]
        n = min(len(s) for s in per_task)
        out[method] = np.swapaxes(np.array([s[:n] for s in per_task]), 0, 1)
    return out


@_quiet
def aggregate(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """IQM, median, mean and optimality gap with 95% stratified-bootstrap CIs: ``{method: {metric: [point,
    low, high]}}``. ``scores[method]`` is ``[run, task]`` of normalised scores."""
    from rliable import library as rly
    from rliable import metrics

    def funcs(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_median(x), metrics.aggregate_mean(x),
                         metrics.aggregate_optimality_gap(x)])

    points, intervals = rly.get_interval_estimates(scores, funcs, reps=reps,
                                                   random_state=np.random.RandomState(seed))
    return {m: {name: [float(points[m][i]), float(intervals[m][0, i]), float(intervals[m][1, i])]
                for i, name in enumerate(METRICS)} for m in scores}


@_quiet
def probability_of_improvement(scores: dict[str, np.ndarray], reps: int = 2000,
                               seed: int = 0) -> dict[str, list[float]]:
    """``{"X,Y": [P(X > Y), low, high]}`` for every pair of methods, with stratified-bootstrap CIs."""
    from rliable import library as rly
    from rliable import metrics

    pairs = {f"{x},{y}": (scores[x], scores[y]) for x, y in itertools.combinations(scores, 2)}
    if not pairs:
        return {}
    points, intervals = rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps,
                                                   random_state=np.random.RandomState(seed))
    return {k: [float(np.ravel(points[k])[0]), *map(float, np.ravel(intervals[k]))] for k in pairs}


@_quiet
def curve_band(curves: list[Curve], grid: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean return over seeds at each ``grid`` frame and its 95% bootstrap interval (``[2, frames]``)."""
    from rliable import library as rly

    values = np.stack([np.interp(grid, c.frames, c.returns) for c in curves])[:, None, :]  # [run, 1 task, frame]
    points, intervals = rly.get_interval_estimates({"m": values}, lambda x: x.mean(axis=(0, 1)), reps=reps,
                                                   random_state=np.random.RandomState(seed))
    return points["m"], intervals["m"]


# ------------------------------------------------------------------------------------------------ figures
def _save(fig: Any, out: Path, name: str, tight: bool = False) -> list[Path]:
    """PNG and SVG of ``fig``. Figures built here use constrained layout (every label inside the figure, which
    keeps its size: ``figsize * DPI`` pixels); ``tight`` crops rliable's own figures to their content instead."""
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, dpi=DPI, **({"bbox_inches": "tight"} if tight else {}))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _colors(methods: list[str]) -> dict[str, Any]:
    import seaborn as sns

    return dict(zip(methods, sns.color_palette("colorblind", len(methods))))


def short_frames(frames: float) -> str:
    """``20000`` -> ``20k``, ``1500`` -> ``1.5k``, ``1000000`` -> ``1M``."""
    for size, suffix in ((1_000_000, "M"), (1000, "k")):
        if frames >= size:
            return f"{frames / size:.3g}{suffix}"
    return f"{frames:g}"


def measured_frames(group: list[Curve]) -> np.ndarray:
    """Frames at which every curve of ``group`` has an evaluation (the points a plot may mark)."""
    return functools.reduce(np.intersect1d, [c.frames for c in group])


def reference_label(method: str, curves: list[Curve]) -> str:
    """A published curve's legend entry (one for all its tasks): its source, seeds, evaluation spacing and the
    frames every task's evaluations reach."""
    groups = [[c for c in curves if c.task == t and c.method == method] for t in sorted({c.task for c in curves})]
    groups = [g for g in groups if g]
    steps = [np.median(np.diff(f)) for f in map(measured_frames, groups) if len(f) > 1]
    every = f", evals every {short_frames(float(min(steps)))}" if steps else ""
    reach = min(min(c.frames[-1] for c in g) for g in groups)
    return f"{method}: {max(len(g) for g in groups)} seeds{every}, to {short_frames(reach)}"


def one_seed_methods(curves: list[Curve], methods: list[str]) -> list[str]:
    """Methods with a single seed on some task (their intervals collapse to a point)."""
    return [m for m in methods if any(len({c.seed for c in curves if c.task == t and c.method == m}) == 1
                                      for t in {c.task for c in curves if c.method == m})]


def _seed_note(single: list[str]) -> str:
    return f"1 seed: no CI ({', '.join(single)})" if single else ""


def figure_task_curves(curves: list[Curve], tasks: list[str], methods: list[str], references: list[str],
                       reps: int, seed: int) -> Any:
    """One panel per task: each method's mean eval return over seeds (markers at the frames every seed measured,
    lines between them) with its 95% bootstrap band; published curves dashed, up to our last frame if they reach
    it (interpolated between their evaluations), else to their own last evaluation, labelled with their range."""
    import matplotlib.pyplot as plt

    colors = _colors(methods)
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows + 0.8), squeeze=False, layout="constrained")
    legend: dict[str, Any] = {}
    for ax, task in zip(axes.flat, tasks):
        end = max(c.frames[-1] for c in curves if c.task == task and c.method not in references)
        for method in methods:
            group = [c for c in curves if c.task == task and c.method == method]
            if not group:
                continue
            published = method in references
            last = min(c.frames[-1] for c in group)
            grid = np.unique(np.concatenate([c.frames[c.frames <= min(last, end)] for c in group]))
            if published and last > end:
                grid = np.append(grid[grid < end], end)  # ends at our last frame, between two of its evaluations
            mean, band = curve_band(group, grid, reps, seed)
            label = reference_label(method, curves) if published else (
                f"{method} (n={len(group)}{': no CI' if len(group) == 1 else ''})")
            (line,) = ax.plot(grid, mean, "--" if published else "-", color=colors[method], label=label)
            marked = np.isin(grid, measured_frames(group))
            ax.plot(grid[marked], mean[marked], "o", ms=3, color=colors[method])
            if len(group) > 1:
                ax.fill_between(grid, band[0], band[1], color=colors[method], alpha=0.2)
            legend.setdefault(label, line)
        ax.set_title(task)
        ax.set_xlabel("frames")
        ax.set_ylabel("eval return")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncol=min(cols, len(legend)),
               fontsize="small")
    note = _seed_note(one_seed_methods(curves, [m for m in methods if m not in references]))
    if note:
        fig.suptitle(note, fontsize="medium")
    return fig


def plot_task_curves(curves: list[Curve], tasks: list[str], methods: list[str], out: Path, reps: int,
                     seed: int, references: list[str] = ()) -> list[Path]:
    return _save(figure_task_curves(curves, tasks, methods, list(references), reps, seed), out, "curves")


def figure_aggregates(stats: dict[str, dict[str, list[float]]], note: str = "") -> Any:
    """One panel per metric: each method's point estimate (tick) and 95% CI (bar)."""
    import matplotlib.pyplot as plt

    methods = list(stats)
    colors = _colors(methods)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.1 * len(METRICS), 1.5 + 0.4 * len(methods)),
                             sharey=True, layout="constrained")
    for ax, metric in zip(axes, METRICS):
        for i, method in enumerate(methods):
            point, low, high = stats[method][metric]
            ax.barh(i, high - low, left=low, height=0.6, color=colors[method], alpha=0.75)
            ax.vlines(point, i - 0.35, i + 0.35, color="k", lw=1.5)
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        low, high = min(stats[m][metric][1] for m in methods), max(stats[m][metric][2] for m in methods)
        pad = 0.08 * (high - low or 0.5)  # points at the extremes stay visible (bars' sticky edges ignore margins)
        ax.set_xlim(low - pad, high + pad)
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    axes[0].set_yticks(range(len(methods)), methods)
    axes[0].invert_yaxis()
    fig.supxlabel("normalised score (optimality gap: lower is better)", fontsize="medium")
    if note:
        fig.suptitle(note, fontsize="medium")
    return fig


def plot_aggregates(stats: dict[str, dict[str, list[float]]], out: Path, note: str = "") -> list[Path]:
    return _save(figure_aggregates(stats, note), out, "aggregate")


@_quiet
def plot_profiles(scores: dict[str, np.ndarray], out: Path, reps: int) -> list[Path]:
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import plot_utils

    taus = np.linspace(0.0, max(1.0, max(float(s.max()) for s in scores.values())), 81)
    profiles, cis = rly.create_performance_profile(scores, taus, reps=reps)
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, colors=_colors(list(scores)),
                                         xlabel=r"Normalised score $\tau$", ax=ax, labelsize="medium",
                                         ticklabelsize="medium")
    ax.legend(loc="upper right")
    return _save(fig, out, "performance_profile")


@_quiet
def sample_efficiency(scores: dict[str, np.ndarray], reps: int, seed: int) -> tuple[dict, dict]:
    """IQM across tasks at each frame of ``scores[method][run, task, frame]`` and its 95% stratified-bootstrap
    interval: ``({method: points}, {method: [2, frames]})``."""
    from rliable import library as rly
    from rliable import metrics

    def iqm(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x[..., i]) for i in range(x.shape[-1])])

    return rly.get_interval_estimates(scores, iqm, reps=reps, random_state=np.random.RandomState(seed))


def figure_sample_efficiency(points: dict[str, np.ndarray], intervals: dict[str, np.ndarray], frames: np.ndarray,
                             references: list[str] = (), measured: bool = True, note: str = "") -> Any:
    """IQM normalised score against frames: markers only at measured evaluations (``measured``), lines between
    them; references dashed with no markers (their values here are interpolated between their evaluations)."""
    import matplotlib.pyplot as plt

    colors = _colors(list(points))
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    for method, values in points.items():
        ref = method in references
        ax.plot(frames, values, "--" if ref else "-", marker=None if ref or not measured else "o", ms=4,
                color=colors[method], label=method + (" (interpolated at these frames)" if ref else ""))
        if np.any(intervals[method][1] > intervals[method][0]):
            ax.fill_between(frames, intervals[method][0], intervals[method][1], color=colors[method], alpha=0.2)
    ax.set_xlabel("frames")
    ax.set_ylabel("IQM normalised score")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    if note:
        ax.set_title(note, fontsize="medium")
    return fig


def plot_sample_efficiency(scores: dict[str, np.ndarray], frames: np.ndarray, out: Path, reps: int, seed: int,
                           references: list[str] = (), measured: bool = True, note: str = "") -> list[Path]:
    points, intervals = sample_efficiency(scores, reps, seed)
    return _save(figure_sample_efficiency(points, intervals, frames, list(references), measured, note), out,
                 "sample_efficiency")


def plot_improvement(poi: dict[str, list[float]], out: Path) -> list[Path]:
    from rliable import plot_utils

    points = {k: v[0] for k, v in poi.items()}
    intervals = {k: np.array([v[1], v[2]]) for k, v in poi.items()}
    ax = plot_utils.plot_probability_of_improvement(points, intervals, figsize=(5, 0.8 + 0.5 * len(poi)),
                                                    colors=list(_colors(list(poi)).values()))
    return _save(ax.get_figure(), out, "probability_of_improvement", tight=True)


# ------------------------------------------------------------------------------------------------ published
def proxy_label(runs: list[Curve], frames: dict[str, float]) -> str | None:
    """``CPU proxy: ...`` when any task in ``frames`` is compared below the published 100k frames (else ``None``)."""
    low = sorted({int(f) for f in frames.values() if f < min(f for _, f in published.TABLE)})
    if not low:
        return None

    def values(key: str) -> str:
        return "/".join(str(v) for v in sorted({c.settings.get(key) for c in runs if c.task in frames}, key=str))

    span = f"{low[0]:,}" if len(low) == 1 else f"{low[0]:,}–{low[-1]:,}"
    return (f"CPU proxy: {span} frames, batch {values('batch')}, {values('size')}px — not comparable to the "
            "paper's 100k")


def compare_published(per_task: dict[str, dict[str, Any]], methods: list[str],
                      references: list[str]) -> dict[str, dict[str, float]]:
    """``{task: {column: return}}``: each method's mean final return and each reference curve's mean at the same
    frame (from ``per_task``) beside the CURL paper's numbers, for the tasks that table covers."""
    rows = {}
    for task, row in per_task.items():
        paper = {published.column(m, f): v[task] for (m, f), v in published.TABLE.items() if task in v}
        if paper:
            rows[task] = {m: row[m][0] for m in methods + references if m in row} | paper
    return rows


def published_markdown(p: dict[str, Any], frames: dict[str, float]) -> list[str]:
    """The comparison with published numbers as Markdown lines."""
    if not p["rows"]:
        return []
    columns = list(dict.fromkeys(k for row in p["rows"].values() for k in row))
    lines = ["", "## Against published numbers", ""]
    if p["proxy"]:
        lines += [f"**{p['proxy']}.**", ""]
    lines += [f"Mean final return of your runs (and of `--reference` curves at the same frame) beside {p['citation']}.",
              "", "| task | frame | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for task, row in p["rows"].items():
        lines.append(f"| {task} | {frames[task]:,.0f} | "
                     + " | ".join("-" if c not in row else f"{row[c]:.1f}" if isinstance(row[c], float)
                                  else str(row[c]) for c in columns) + " |")  # published numbers are ints
    return lines


# ------------------------------------------------------------------------------------------------ report
def _ci(v: list[float]) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def build_report(paths: list[Path], out: Path, reference: Path | None = None, reps: int = 2000, seed: int = 0,
                 group_by: tuple[str, ...] = ("agent.name", "representation.name"),
                 score_max: float | None = None) -> dict[str, Any]:
    """Write figures, ``summary.md`` and ``summary.json`` to ``out``; return the summary."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs(paths, group_by)
    tasks = sorted({c.task for c in runs})
    methods = sorted({c.method for c in runs})
    curves = runs + (load_reference(reference, tasks) if reference else [])
    ref_methods = sorted({c.method for c in curves} - set(methods))
    all_methods = methods + ref_methods
    # Aggregate over the tasks every method has (a reference enters only if it covers all of them).
    common = [t for t in tasks if all(any(c.task == t and c.method == m for c in runs) for m in methods)]
    at = {t: final_frame(runs, t, methods) for t in common}
    # ... and only if its published evaluations reach the frame it is compared at (no extrapolation).
    agg_methods = methods + [m for m in ref_methods if all(reaches(curves, t, m, at[t]) for t in common)]
    norm = {t: max_score(t, score_max) for t in tasks}
    scores = score_matrices(curves, common, agg_methods, at, norm) if common else {}
    stats = aggregate(scores, reps, seed) if scores else {}
    poi = probability_of_improvement(scores, reps, seed) if len(scores) > 1 else {}

    per_task: dict[str, dict[str, Any]] = {}
    for task in tasks:
        frame = final_frame(runs, task, [m for m in methods if any(c.task == task and c.method == m for c in runs)])
        per_task[task] = {"frame": frame}
        for method in all_methods:
            group = [c for c in curves if c.task == task and c.method == method]
            if group and reaches(curves, task, method, frame):
                mean, band = curve_band(group, np.array([frame]), reps, seed)
                per_task[task][method] = [float(mean[0]), float(band[0, 0]), float(band[1, 0]), len(group)]

    single = one_seed_methods(runs, methods)
    figures = plot_task_curves(curves, tasks, all_methods, out, reps, seed, ref_methods)
    if stats:
        figures += plot_aggregates(stats, out, _seed_note(single)) + plot_profiles(scores, out, reps)
        # The frames every run of the aggregated tasks evaluated at (markers there only), else all of them.
        limit = min(at.values())
        own = [c for c in runs if c.task in common]
        grid = measured_frames(own)
        grid, measured = (grid[grid <= limit], True) if (grid <= limit).sum() > 1 else (
            np.unique(np.concatenate([c.frames[c.frames <= limit] for c in own])), False)
        figures += plot_sample_efficiency(score_matrices(curves, common, agg_methods, dict.fromkeys(common, grid),
                                                         norm), grid, out, reps, seed, ref_methods, measured,
                                          _seed_note(single))
    if poi:
        figures += plot_improvement(poi, out)
    summary = {"runs": len(runs), "tasks": tasks, "methods": methods, "references": ref_methods,
               "aggregate_tasks": common, "normalisation": norm, "per_task": per_task, "aggregate": stats,
               "probability_of_improvement": poi, "figures": [str(p) for p in figures],
               "published": {"citation": published.CITATION, "proxy": None,
                             "rows": compare_published(per_task, methods, ref_methods)},
               "bootstrap": {"reps": reps, "seed": seed, "confidence": 0.95},
               "notes": notes(curves, runs, methods, ref_methods, single),
               "sample_efficiency": {"frames": [float(f) for f in grid] if stats else [],
                                     "measured": bool(stats) and measured}}
    compared = summary["published"]["rows"]
    summary["published"]["proxy"] = proxy_label(runs, {t: per_task[t]["frame"] for t in compared})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary, out))
    return summary


def markdown(s: dict[str, Any], out: Path) -> str:
    """The summary as Markdown tables (per-task final returns, aggregates, probability of improvement)."""
    methods = s["methods"] + s["references"]
    n_tasks = len(s["tasks"])
    title = f"# Results: {s['runs']} runs, {n_tasks} task{'s' * (n_tasks != 1)}, methods {', '.join(s['methods'])}"
    proxy = s.get("published", {}).get("proxy")
    lines = [title, "", *([f"**{proxy}.**", ""] if proxy else []), *[f"Note: {n}" for n in s.get("notes", [])],
             *([""] if s.get("notes") else []),
             ("Final evaluation return (mean over seeds [95% bootstrap CI], n seeds) at the last frame all runs "
             "of the task reached."), "",
             "| task | frame | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for task, row in s["per_task"].items():
        cells = [f"{row[m][0]:.1f} [{row[m][1]:.1f}, {row[m][2]:.1f}] (n={row[m][3]})" if m in row else "-"
                 for m in methods]
        lines.append(f"| {task} | {row['frame']:,.0f} | " + " | ".join(cells) + " |")
    if s["aggregate"]:
        n = len(s["aggregate_tasks"])
        lines += ["", (f"Aggregate over {n} task{'s' * (n != 1)} of scores normalised by the task's maximum "
                  f"(DMC: 1000); 95% stratified-bootstrap CIs ({s['bootstrap']['reps']} resamples). Optimality gap: "
                  "lower is better."), "", "| method | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
        for method, row in s["aggregate"].items():
            lines.append(f"| {method} | " + " | ".join(_ci(row[k]) for k in METRICS) + " |")
    if s["probability_of_improvement"]:
        lines += ["", "| X | Y | P(X > Y) [95% CI] |", "|---|---|---:|"]
        for pair, v in s["probability_of_improvement"].items():
            x, y = pair.split(",", 1)
            lines.append(f"| {x} | {y} | {_ci(v)} |")
    lines += published_markdown(s["published"], {t: r["frame"] for t, r in s["per_task"].items()})
    lines += ["", "Figures:", ""] + [f"![{Path(p).stem}]({Path(p).relative_to(out)})" for p in s["figures"]
                                     if p.endswith(".png")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssrl report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or folders holding them")
    parser.add_argument("--out", type=Path, required=True, help="output folder for figures and summary.md")
    parser.add_argument("--reference", type=Path, help="folder of published curves, e.g. DrQ-v2's dmc_<task>.csv")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--group-by", default="agent.name,representation.name",
                        help="config keys whose values name a method (default: agent.name,representation.name)")
    parser.add_argument("--max-score", type=float, help="normalise every task by this score (default: DMC 1000)")
    ns = parser.parse_args(argv)
    try:
        require_extra("sweep", "matplotlib", "rliable")
        s = build_report(ns.runs, ns.out, ns.reference, ns.reps, ns.seed, tuple(ns.group_by.split(",")), ns.max_score)
    except (FileNotFoundError, ConfigError, ImportError) as e:
        print(f"ssrl report: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(published_markdown(s["published"], {t: r["frame"] for t, r in s["per_task"].items()})).strip())
    print(f"{s['runs']} runs, {len(s['tasks'])} tasks, methods: {', '.join(s['methods'])} -> {ns.out / 'summary.md'}")
    return 0
