"""Reproduction harness: the published CURL table, the comparison table built from run directories, and the CPU
proxy suite's labelling."""

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from ssrl import config as config_lib
from ssrl.cli import main as cli_main
from ssrl.experiments import multirun, published

pytest.importorskip("rliable")

REFERENCE_README = Path(__file__).resolve().parents[2] / "shared" / "reference" / "README.md"
TASKS = ("dmc/finger-spin", "dmc/cartpole-swingup", "dmc/reacher-easy", "dmc/cheetah-run", "dmc/walker-walk",
         "dmc/ball_in_cup-catch")


def test_published_table_matches_the_reference_readme():
    t = published.CURL_TABLE
    assert t[("CURL", 100_000)]["dmc/finger-spin"] == 767 and t[("CURL", 500_000)]["dmc/walker-walk"] == 902
    assert t[("Dreamer", 100_000)]["dmc/cheetah-run"] == 235 and t[("state SAC", 100_000)]["dmc/reacher-easy"] == 746
    assert all(set(scores) == set(TASKS) for scores in t.values()) and "Srinivas" in published.CITATION
    if not REFERENCE_README.exists():
        return
    columns = [("CURL", 100_000), ("CURL", 500_000), ("SAC+AE", 100_000), ("Dreamer", 100_000),
               ("state SAC", 100_000)]
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", REFERENCE_README.read_text(), re.MULTILINE)
    assert len(rows) == 6
    for name, *values in rows:
        task = next(t for t in TASKS if t.replace("-", "_").endswith(name))
        assert [t[c][task] for c in columns] == [float(v) for v in values]


def test_mrq_columns_match_the_reference_readme_and_its_per_seed_results():
    t = published.MRQ_TABLE
    assert t[("MR.Q state", 100_000)]["dmc/reacher-easy"] == 940 and t[("MR.Q pixels", 100_000)]["dmc/cheetah-run"] == 254
    assert set(published.TABLE) == set(published.CURL_TABLE) | set(t) and "MR.Q" in published.CITATION
    if not REFERENCE_README.exists():
        return
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \|$", REFERENCE_README.read_text(), re.MULTILINE)
    assert len(rows) == 6
    for name, state, pixels in rows:
        task = next(t for t in TASKS if t.replace("-", "_").endswith(name))
        assert (t[("MR.Q state", 100_000)][task], t[("MR.Q pixels", 100_000)][task]) == (int(state), int(pixels))
    # The README's means agree with the per-seed results file at 100k frames (rounded to the nearest integer).
    per_seed = REFERENCE_README.parent / "mrq_curves" / "dmc_state.csv"
    at_100k: dict[str, list[float]] = {}
    with per_seed.open() as f:
        for r in csv.DictReader(f):
            if int(r["frame"]) == 100_000:
                at_100k.setdefault("dmc/" + r["task"], []).append(float(r["episode_reward"]))
    for task, value in t[("MR.Q state", 100_000)].items():
        assert abs(sum(at_100k[task]) / len(at_100k[task]) - value) <= 1, task


def _run(root: Path, task: str, seed: int, final: float, frames: int = 3000, batch: int = 32, size: int = 64) -> None:
    run = root / f"{task.replace('/', '-')}-{seed}"
    run.mkdir(parents=True)
    cfg = {"env": task, "seed": seed, "size": size, "agent": {"name": "sac", "batch_size": batch},
           "representation": {"name": "curl"}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "eval.csv").write_text(f"frame,episode_reward\n0,0.0\n{frames // 2},{final / 2}\n{frames},{final}\n")


def test_comparison_table_from_run_dirs_with_published_numbers_and_reference_curves(tmp_path, capsys):
    for seed, (cheetah, walker) in enumerate([(100.0, 300.0), (200.0, 500.0)]):
        _run(tmp_path / "runs", "dmc/cheetah-run", seed, cheetah)
        _run(tmp_path / "runs", "dmc/walker-walk", seed, walker)
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "dmc_cheetah_run.csv").write_text("agent,task,seed,frame,episode_reward\n"
                                             "drqv2,cheetah_run,1,0,0\ndrqv2,cheetah_run,1,10000,500\n"
                                             "drqv2,cheetah_run,2,0,100\ndrqv2,cheetah_run,2,10000,100\n")
    out = tmp_path / "report"
    assert cli_main(["report", str(tmp_path / "runs"), "--out", str(out), "--reference", str(ref),
                     "--reps", "100"]) == 0
    p = json.loads((out / "summary.json").read_text())["published"]
    cheetah, walker = p["rows"]["dmc/cheetah-run"], p["rows"]["dmc/walker-walk"]
    assert cheetah["sac-curl"] == pytest.approx(150.0) and walker["sac-curl"] == pytest.approx(400.0)
    # DrQ-v2 at our frame 3000: seed 1 reads 500 * 0.3 = 150, seed 2 stays at 100 -> mean 125.
    assert cheetah["drqv2 (published)"] == pytest.approx(125.0) and "drqv2 (published)" not in walker
    assert cheetah["CURL 100k"] == 299 and cheetah["CURL 500k"] == 518 and walker["state SAC 100k"] == 891
    assert walker["SAC+AE 100k"] == 394 and walker["Dreamer 100k"] == 277
    label = "CPU proxy: 3,000 frames, batch 32, 64px — not comparable to the paper's 100k"
    assert p["proxy"] == label
    md = (out / "summary.md").read_text()
    assert md.count(label) == 2 and "| dmc/cheetah-run | 3,000 | 150.0 | 125.0 | 299 | 518 |" in md
    assert label in capsys.readouterr().out


def test_runs_at_the_published_budget_are_not_labelled_proxy(tmp_path):
    _run(tmp_path / "runs", "dmc/finger-spin", 0, 700.0, frames=100_000, batch=512, size=84)
    _run(tmp_path / "runs", "dmc/cartpole-balance", 0, 500.0)  # short, but not a task of the published table
    assert cli_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--reps", "50"]) == 0
    p = json.loads((tmp_path / "r" / "summary.json").read_text())["published"]
    assert p["proxy"] is None and list(p["rows"]) == ["dmc/finger-spin"]
    assert p["rows"]["dmc/finger-spin"]["sac-curl"] == pytest.approx(700.0)
    assert "CPU proxy" not in (tmp_path / "r" / "summary.md").read_text()


def test_proxy_suite_runs_the_six_tasks_small_and_is_named_as_a_proxy():
    grid = multirun.expand(["suite=dmc100k-proxy", "agent=drqv2", "seeds=2"])
    cfgs = [config_lib.parse_overrides(j) for j in grid.jobs]
    assert len(cfgs) == 12 and {c.env for c in cfgs} == set(TASKS)
    assert {c.action_repeat for c in cfgs if c.env == "dmc/cartpole-swingup"} == {8}
    assert {(c.frames, c.agent.batch_size, c.size, c.agent.name) for c in cfgs} == {(2000, 32, 64, "drqv2")}
    assert grid.root == Path("runs/dmc100k-proxy") and grid.experiment == "dmc100k-proxy"
    assert multirun.expand(["suite=dmc100k", "experiment=mine"]).root == Path("runs/mine")
