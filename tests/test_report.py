"""Reports: rliable statistics checked against hand-computed cases, and a full report of synthetic runs (with a
published reference) producing non-empty figures and tables."""

import json

import numpy as np
import pytest
import yaml

from ssrl.cli import main as cli_main
from ssrl.experiments import report

pytest.importorskip("rliable")


def test_iqm_median_mean_and_optimality_gap_match_hand_computed_values():
    scores = {"a": (np.arange(8.0) / 10)[:, None]}  # 8 runs of one task: 0.0 .. 0.7
    stats = report.aggregate(scores, reps=200)["a"]
    assert stats["IQM"][0] == pytest.approx(np.mean([0.2, 0.3, 0.4, 0.5]))  # middle half of the runs
    assert stats["Median"][0] == pytest.approx(0.35)
    assert stats["Mean"][0] == pytest.approx(0.35)
    assert stats["Optimality gap"][0] == pytest.approx(np.mean(1 - np.arange(8.0) / 10))
    for low, point, high in ((v[1], v[0], v[2]) for v in stats.values()):
        assert low <= point <= high


def test_bootstrap_is_stratified_by_task_and_its_width_matches_the_normal_approximation():
    # Constant scores within each task: resampling runs inside each task never changes the aggregate.
    constant = {"a": np.array([[0.2, 0.6]] * 6)}
    for _, low, high in report.aggregate(constant, reps=500)["a"].values():
        assert high - low == pytest.approx(0.0, abs=1e-12)
    # One task, 400 runs: the 95% percentile interval of the mean is about 2 * 1.96 * sd / sqrt(n) wide.
    x = np.random.default_rng(0).normal(0.5, 0.1, size=(400, 1))
    _, low, high = report.aggregate({"a": x}, reps=4000)["a"]["Mean"]
    expected = 2 * 1.96 * x.std() / np.sqrt(len(x))
    assert high - low == pytest.approx(expected, rel=0.1)


def test_probability_of_improvement():
    better, worse = np.full((5, 2), 0.9), np.full((5, 2), 0.1)
    poi = report.probability_of_improvement({"x": better, "y": worse, "z": worse.copy()}, reps=200)
    assert poi["x,y"][0] == 1.0 and poi["x,z"][0] == 1.0 and poi["y,z"][0] == 0.5


def _make_runs(root, final_none=(200.0, 260.0, 230.0), final_curl=(400.0, 460.0, 430.0)):
    """Two methods x two tasks x three seeds with linear learning curves ending at the given returns."""
    for task in ("dmc/cheetah-run", "dmc/ball_in_cup-catch"):
        for rep, finals in (("none", final_none), ("curl", final_curl)):
            for seed, final in enumerate(finals):
                run = root / task.replace("/", "-") / rep / f"seed{seed}"
                run.mkdir(parents=True)
                (run / "config.yaml").write_text(yaml.safe_dump({"env": task, "seed": seed, "agent": {"name": "sac"},
                                                                 "representation": {"name": rep}}))
                frames = np.arange(0, 20_001, 5000)
                rows = "\n".join(f"{f},{f / 20_000 * final}" for f in frames)
                (run / "eval.csv").write_text(f"frame,episode_reward\n{rows}\n")


def _make_reference(directory):
    directory.mkdir()
    for name in ("dmc_cheetah_run", "dmc_cup_catch"):
        lines = ["agent,task,seed,frame,episode_reward"]
        lines += [f"DrQ-v2,x,{seed},{f},{f / 40_000 * 1000}" for seed in (1, 2) for f in range(0, 40_001, 10_000)]
        (directory / f"{name}.csv").write_text("\n".join(lines) + "\n")


def test_report_writes_figures_tables_and_numbers(tmp_path):
    _make_runs(tmp_path / "runs")
    _make_reference(tmp_path / "ref")
    out = tmp_path / "report"
    code = cli_main(["report", str(tmp_path / "runs"), "--out", str(out), "--reference", str(tmp_path / "ref"),
                     "--reps", "200"])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["runs"] == 12 and s["methods"] == ["sac-curl", "sac-none"]
    assert s["references"] == ["DrQ-v2 (published)"]
    cheetah = s["per_task"]["dmc/cheetah-run"]
    assert cheetah["frame"] == 20_000
    assert cheetah["sac-none"][0] == pytest.approx(230.0) and cheetah["sac-none"][3] == 3
    assert cheetah["DrQ-v2 (published)"][0] == pytest.approx(500.0)  # read at our last frame: 20k of 40k
    agg = s["aggregate"]
    assert agg["sac-none"]["Mean"][0] == pytest.approx(0.23)  # normalised by DMC's 1000
    assert agg["sac-curl"]["IQM"][0] > agg["sac-none"]["IQM"][0]
    assert s["probability_of_improvement"]["sac-curl,sac-none"][0] == 1.0
    for name in ("curves", "aggregate", "performance_profile", "probability_of_improvement", "sample_efficiency"):
        png, svg = out / f"{name}.png", out / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert "<svg" in svg.read_text()[:1000]
    md = (out / "summary.md").read_text()
    assert "| dmc/cheetah-run | 20,000 | 430.0" in md and "| sac-none | 0.230 [" in md
    assert "![curves](curves.png)" in md


def test_report_errors_name_what_is_missing(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no runs" in capsys.readouterr().err
    _make_runs(tmp_path / "runs")
    assert cli_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--reference",
                     str(tmp_path / "nope")]) == 2
    assert "--reference" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ figures
def _png_size(path):
    header = path.read_bytes()[:24]
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def _overlaps_and_outside(fig):
    """Pairs of drawn texts whose boxes overlap, and texts that stick out of the figure."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    undrawn = set()  # tick labels of ticks outside the view limits exist but are not drawn
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            for tick in axis.get_major_ticks():
                if not min(lo, hi) <= tick.get_loc() <= max(lo, hi):
                    undrawn |= {id(tick.label1), id(tick.label2)}
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]
    overlapping = [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1:] if x.overlaps(y)]
    w, h = fig.bbox.width, fig.bbox.height
    outside = [a for a, x in boxes if x.x0 < -1 or x.y0 < -1 or x.x1 > w + 1 or x.y1 > h + 1]
    return overlapping, outside


def test_figures_have_their_size_constrained_layout_and_no_overlapping_labels(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    _make_runs(tmp_path / "runs")
    _make_reference(tmp_path / "ref")
    out = tmp_path / "report"
    s = report.build_report([tmp_path / "runs"], out, tmp_path / "ref", reps=100)
    curves = report.find_runs([tmp_path / "runs"]) + report.load_reference(tmp_path / "ref", s["tasks"])
    methods = s["methods"] + s["references"]
    points = {m: np.linspace(0, 0.5, 5) for m in methods}
    intervals = {m: np.stack([points[m] - 0.05, points[m] + 0.05]) for m in methods}
    figures = {"aggregate": report.figure_aggregates(s["aggregate"], "1 seed: no CI (x)"),
               "curves": report.figure_task_curves(curves, s["tasks"], methods, s["references"], 50, 0),
               "sample_efficiency": report.figure_sample_efficiency(points, intervals, np.arange(0, 20_001, 5000),
                                                                    s["references"])}
    for name, fig in figures.items():
        assert fig.get_layout_engine() is not None and type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
        overlapping, outside = _overlaps_and_outside(fig)
        assert not overlapping, f"{name}: overlapping labels {overlapping}"
        assert not outside, f"{name}: labels outside the figure {outside}"
        w, h = fig.get_size_inches() * report.DPI
        assert _png_size(out / f"{name}.png") == (round(w), round(h))  # saved at the figure's own size
    for name in ("performance_profile", "probability_of_improvement"):
        width, height = _png_size(out / f"{name}.png")
        assert width > 300 and height > 100


def test_sample_efficiency_uses_only_measured_eval_frames(tmp_path):
    _make_runs(tmp_path / "runs")
    s = report.build_report([tmp_path / "runs"], tmp_path / "report", reps=50)
    assert s["sample_efficiency"] == {"frames": [0.0, 5000.0, 10_000.0, 15_000.0, 20_000.0], "measured": True}


def test_a_reference_that_stops_early_is_not_extrapolated_and_its_band_ends_with_it(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    _make_runs(tmp_path / "runs")
    ref = tmp_path / "ref"
    ref.mkdir()
    for name in ("dmc_cheetah_run", "dmc_cup_catch"):  # published only up to 10k; our runs reach 20k
        rows = [f"DrQ-v2,x,{seed},{f},{f / 10}" for seed in (1, 2) for f in (0, 5000, 10_000)]
        (ref / f"{name}.csv").write_text("agent,task,seed,frame,episode_reward\n" + "\n".join(rows) + "\n")
    s = report.build_report([tmp_path / "runs"], tmp_path / "report", ref, reps=50)
    assert "DrQ-v2 (published)" not in s["per_task"]["dmc/cheetah-run"]  # no value quoted at 20k
    assert "DrQ-v2 (published)" not in s["aggregate"]
    curves = report.find_runs([tmp_path / "runs"]) + report.load_reference(ref, s["tasks"])
    fig = report.figure_task_curves(curves, s["tasks"], s["methods"] + s["references"], s["references"], 20, 0)
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert max(dashed[0].get_xdata()) == 10_000
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "DrQ-v2 (published): 2 seeds, evals every 5k, to 10k" in labels


def test_one_seed_reports_say_there_is_no_ci(tmp_path):
    _make_runs(tmp_path / "runs", final_none=(200.0,), final_curl=(400.0,))
    s = report.build_report([tmp_path / "runs"], tmp_path / "report", reps=50)
    assert any(n.startswith("1 seed: no CI for sac-curl, sac-none") for n in s["notes"])
    assert "Note: 1 seed: no CI" in (tmp_path / "report" / "summary.md").read_text()
    fig = report.figure_aggregates(s["aggregate"], report._seed_note(["sac-curl", "sac-none"]))
    assert fig._suptitle.get_text() == "1 seed: no CI (sac-curl, sac-none)"
