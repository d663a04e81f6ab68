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
