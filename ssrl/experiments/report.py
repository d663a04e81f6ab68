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
def _save(fig: Any, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, bbox_inches="tight", dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _colors(methods: list[str]) -> dict[str, Any]:
    import seaborn as sns

    return dict(zip(methods, sns.color_palette("colorblind", len(methods))))


def plot_task_curves(curves: list[Curve], tasks: list[str], methods: list[str], out: Path, reps: int,
                     seed: int) -> list[Path]:
    import matplotlib.pyplot as plt

    colors = _colors(methods)
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        end = max(c.frames[-1] for c in curves if c.task == task and not c.method.endswith("(published)"))
        for method in methods:
            group = [c for c in curves if c.task == task and c.method == method]
            if not group:
                continue
            stop = min(min(c.frames[-1] for c in group), end)
            grid = np.unique(np.concatenate([c.frames[c.frames <= stop] for c in group]))
            mean, band = curve_band(group, grid, reps, seed)
            style = "--" if method.endswith("(published)") else "-"
            ax.plot(grid, mean, style, color=colors[method], label=f"{method} (n={len(group)})")
            ax.fill_between(grid, band[0], band[1], color=colors[method], alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("frames")
        ax.set_ylabel("eval return")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), bbox_to_anchor=(0.5, -0.02 - 0.03 * rows))
    fig.tight_layout()
    return _save(fig, out, "curves")


def plot_aggregates(stats: dict[str, dict[str, list[float]]], out: Path) -> list[Path]:
    from rliable import plot_utils

    methods = list(stats)
    points = {m: np.array([stats[m][k][0] for k in METRICS]) for m in methods}
    intervals = {m: np.array([[stats[m][k][1] for k in METRICS], [stats[m][k][2] for k in METRICS]]) for m in methods}
    fig, _ = plot_utils.plot_interval_estimates(points, intervals, metric_names=list(METRICS), algorithms=methods,
                                                colors=_colors(methods), xlabel="Normalised score",
                                                xlabel_y_coordinate=-0.4)
    return _save(fig, out, "aggregate")


@_quiet
def plot_profiles(scores: dict[str, np.ndarray], out: Path, reps: int) -> list[Path]:
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import plot_utils

    taus = np.linspace(0.0, max(1.0, max(float(s.max()) for s in scores.values())), 81)
    profiles, cis = rly.create_performance_profile(scores, taus, reps=reps)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, colors=_colors(list(scores)),
                                         xlabel=r"Normalised score $\tau$", ax=ax, labelsize="medium",
                                         ticklabelsize="medium")
    ax.legend(loc="upper right")
    return _save(fig, out, "performance_profile")


@_quiet
def plot_sample_efficiency(scores: dict[str, np.ndarray], frames: np.ndarray, out: Path, reps: int,
                           seed: int) -> list[Path]:
    """IQM of normalised scores across tasks at each frame, with 95% stratified-bootstrap bands."""
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import metrics, plot_utils

    def iqm(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x[..., i]) for i in range(x.shape[-1])])

    points, intervals = rly.get_interval_estimates(scores, iqm, reps=reps, random_state=np.random.RandomState(seed))
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_sample_efficiency_curve(frames, points, intervals, algorithms=list(scores),
                                            colors=_colors(list(scores)), xlabel="frames",
                                            ylabel="IQM normalised score", ax=ax, labelsize="medium",
                                            ticklabelsize="medium")
    ax.legend(loc="upper left")
    return _save(fig, out, "sample_efficiency")


def plot_improvement(poi: dict[str, list[float]], out: Path) -> list[Path]:
    from rliable import plot_utils

    points = {k: v[0] for k, v in poi.items()}
    intervals = {k: np.array([v[1], v[2]]) for k, v in poi.items()}
    ax = plot_utils.plot_probability_of_improvement(points, intervals, figsize=(5, 0.8 + 0.5 * len(poi)),
                                                    colors=list(_colors(list(poi)).values()))
    return _save(ax.get_figure(), out, "probability_of_improvement")


# ------------------------------------------------------------------------------------------------ published
def proxy_label(runs: list[Curve], frames: dict[str, float]) -> str | None:
    """``CPU proxy: ...`` when any task in ``frames`` is compared below the published 100k frames (else ``None``)."""
    low = sorted({int(f) for f in frames.values() if f < min(f for _, f in published.CURL_TABLE)})
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
        paper = {published.column(m, f): v[task] for (m, f), v in published.CURL_TABLE.items() if task in v}
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
    agg_methods = methods + [m for m in ref_methods if all(any(c.task == t and c.method == m for c in curves)
                                                          for t in common)]
    at = {t: final_frame(runs, t, methods) for t in common}
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
            if group:
                mean, band = curve_band(group, np.array([frame]), reps, seed)
                per_task[task][method] = [float(mean[0]), float(band[0, 0]), float(band[1, 0]), len(group)]

    figures = plot_task_curves(curves, tasks, all_methods, out, reps, seed)
    if stats:
        figures += plot_aggregates(stats, out) + plot_profiles(scores, out, reps)
        grid = np.linspace(0, min(at.values()), 21)
        figures += plot_sample_efficiency(score_matrices(curves, common, agg_methods, dict.fromkeys(common, grid),
                                                         norm), grid, out, reps, seed)
    if poi:
        figures += plot_improvement(poi, out)
    summary = {"runs": len(runs), "tasks": tasks, "methods": methods, "references": ref_methods,
               "aggregate_tasks": common, "normalisation": norm, "per_task": per_task, "aggregate": stats,
               "probability_of_improvement": poi, "figures": [str(p) for p in figures],
               "published": {"citation": published.CITATION, "proxy": None,
                             "rows": compare_published(per_task, methods, ref_methods)},
               "bootstrap": {"reps": reps, "seed": seed, "confidence": 0.95}}
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
    lines = [title, "", *([f"**{proxy}.**", ""] if proxy else []),
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
