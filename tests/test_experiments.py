"""Experiments at scale: grid expansion, multirun skip/resume, sweeps (local Optuna and Ray Tune), wandb export,
run metadata. Training runs are tiny state-based cartpole runs (one 125-step episode each)."""

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from ssrl import config as config_lib
from ssrl.cli import main as cli_main
from ssrl.errors import ConfigError
from ssrl.experiments import multirun, sweep
from ssrl.experiments.suites import SUITES, load_suite
from ssrl.runtime import meta

# One 1000-frame episode of cartpole-swingup (action repeat 8) with an eval before and after it.
TINY = ["env=dmc/cartpole-swingup", "obs=state", "frames=1000", "seed_frames=500", "eval_every=1000",
        "eval_episodes=1", "agent.hidden_dim=32", "agent.batch_size=16", "encoder.state_hidden_dim=32",
        "replay_capacity=5000", "threads=1"]


# ---------------------------------------------------------------------------------------------- parsing
def test_commas_inside_brackets_and_quotes_do_not_split():
    assert multirun.split_values("linear(1.0,0.1,500000)") == ["linear(1.0,0.1,500000)"]
    assert multirun.split_values("linear(1.0,0.1,500000),linear(1,0.2,1e5)") == ["linear(1.0,0.1,500000)",
                                                                                  "linear(1,0.2,1e5)"]
    assert multirun.split_values("[1,2],'a,b',3") == ["[1,2]", "'a,b'", "3"]
    for bad in ("linear(1,2", "a)", "a,,b"):
        with pytest.raises(ConfigError):
            multirun.split_values(bad)


def test_grid_is_the_product_of_comma_lists_in_argument_order():
    args = ["env=dmc/cheetah-run,dmc/walker-walk", "agent=drqv2", "agent.lr=1e-4,3e-4", "seeds=3",
            "agent.stddev_schedule=linear(1.0,0.1,500000)", "frames=2000"]
    assert multirun.is_multirun(args)
    assert not multirun.is_multirun(["env=dmc/cheetah-run", "agent.stddev_schedule=linear(1.0,0.1,500000)",
                                     "run_dir=runs/a,b"])
    grid = multirun.expand(args)
    assert len(grid.jobs) == 12
    assert grid.jobs[0] == ["env=dmc/cheetah-run", "agent=drqv2", "agent.lr=1e-4", "seed=0",
                            "agent.stddev_schedule=linear(1.0,0.1,500000)", "frames=2000"]
    assert grid.jobs[-1][:4] == ["env=dmc/walker-walk", "agent=drqv2", "agent.lr=3e-4", "seed=2"]
    assert grid.varying == {"env", "agent.lr", "seed"}
    jobs = multirun.plan(grid)  # every config validated
    assert len({j.run_dir for j in jobs}) == 12
    assert all(j.run_dir.parent == Path("runs/multirun") for j in jobs)
    name = jobs[0].run_dir.name
    assert name.startswith("env=dmc-cheetah-run,agent.lr=1e-4,seed=0,agent=drqv2,") and "frames" not in name
    assert config_lib.parse_overrides(jobs[0].overrides).agent.stddev_schedule == "linear(1.0,0.1,500000)"


def test_grid_errors_name_the_bad_run_and_key():
    with pytest.raises(ConfigError, match="agent=bogus"):
        multirun.plan(multirun.expand(["agent=sac,bogus"]))
    with pytest.raises(ConfigError, match="seeds"):
        multirun.expand(["seeds=0"])
    with pytest.raises(ConfigError, match="not both"):
        multirun.expand(["seed=1", "seeds=2"])
    assert cli_main(["train", "env=dmc/cheetah-run", "agent=sac,bogus"]) == 2


def test_long_run_names_are_cut_and_stay_distinct():
    a = multirun.run_name([f"agent.lr={i}e-4" for i in range(40)] + ["seed=0"], {"seed"})
    b = multirun.run_name([f"agent.lr={i}e-4" for i in range(40)] + ["seed=1"], {"seed"})
    assert a.startswith("seed=0,") and b.startswith("seed=1,") and len(a) <= 151 and a != b


def test_suites_expand_to_their_tasks_with_protocol_settings(tmp_path):
    grid = multirun.expand(["suite=dmc100k", "representation=none", "seeds=5"])
    assert len(grid.jobs) == 30
    cfgs = [config_lib.parse_overrides(j) for j in grid.jobs]
    repeats = {c.env: c.action_repeat for c in cfgs}
    assert repeats == {"dmc/finger-spin": 2, "dmc/cartpole-swingup": 8, "dmc/reacher-easy": 4, "dmc/cheetah-run": 4,
                       "dmc/walker-walk": 2, "dmc/ball_in_cup-catch": 4}
    assert {c.frames for c in cfgs} == {100_000} and {c.seed for c in cfgs} == set(range(5))
    assert {c.frames for c in (config_lib.parse_overrides(t) for t in SUITES["dmc500k"].overrides())} == {500_000}
    assert min(config_lib.parse_overrides(t).frames for t in SUITES["dmc-hard"].overrides()) >= 1_000_000
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({"frames": 5000, "tasks": [{"env": "dmc/cheetah-run", "action_repeat": 2},
                                                               {"env": "dmc/hopper-hop", "frames": 9000}]}))
    assert load_suite(str(own)).tasks == {"dmc/cheetah-run": {"frames": 5000, "action_repeat": 2},
                                          "dmc/hopper-hop": {"frames": 9000}}
    with pytest.raises(ConfigError, match="dmc100k"):
        load_suite("dmc101k")


# ------------------------------------------------------------------------------------------- multirun
def _wait_for(path: Path, timeout: float = 120.0) -> None:
    start = time.time()
    while not path.exists():
        assert time.time() - start < timeout, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_multirun_resumes_interrupted_runs_and_skips_finished_ones(tmp_path):
    args = [*[a for a in TINY if not a.startswith(("frames", "eval_every"))], "frames=3000", "eval_every=3000",
            "checkpoint_every=1000", "seeds=2", "jobs=2", f"run_dir={tmp_path}"]
    grid = multirun.expand(args)
    jobs = multirun.plan(grid)
    # Interrupt seed 1 after its first checkpoint.
    proc = multirun.launch_train(jobs[1].overrides + ["experiment=multirun"], jobs[1].run_dir)
    _wait_for(jobs[1].run_dir / "checkpoint.pt")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert meta.read(jobs[1].run_dir)["status"] == "started"

    done = multirun.run_grid(grid)
    assert [j.status for j in done] == ["finished", "finished"]
    log = (jobs[1].run_dir / "train.log").read_text()
    assert "resumed" in log and "resumed" not in (jobs[0].run_dir / "train.log").read_text()
    for job in done:
        info = meta.read(job.run_dir)
        assert info["status"] == "finished" and info["frame"] >= 3000 and info["frames_per_s"] > 0
        assert info["config"]["experiment"] == "multirun" and info["packages"]["torch"]
        assert info["sessions"][0]["hardware"]["cpu_count"] == os.cpu_count() and "git" in info
        assert [r["frame"] for r in meta.read_eval(job.run_dir)] == [0, 3000]
    assert len(meta.read(jobs[1].run_dir)["sessions"]) == 2

    before = {j.run_dir: (j.run_dir / "eval.csv").stat().st_mtime_ns for j in done}
    again = multirun.run_grid(grid)
    assert [j.status for j in again] == ["skipped", "skipped"]
    assert {j.run_dir: (j.run_dir / "eval.csv").stat().st_mtime_ns for j in again} == before


# ---------------------------------------------------------------------------------------------- sweeps
def _spec(tmp_path: Path, **extra) -> Path:
    data = {"name": "tiny", "dir": str(tmp_path / "sweep"), "base": TINY, "method": "grid", "objective": "auc",
            "pruner": "none", "jobs": 2, "params": {"replay_capacity": [5000, 4000, 10]}} | extra
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_spec_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="method"):
        sweep.load_spec(_spec(tmp_path, method="bayes"))
    with pytest.raises(ConfigError, match="agent.lrr"):
        sweep.load_spec(_spec(tmp_path, params={"agent.lrr": [1]}))
    with pytest.raises(ConfigError, match="low and high"):
        sweep.load_spec(_spec(tmp_path, params={"agent.lr": {"low": 1}}))
    with pytest.raises(ConfigError, match="grid needs a list"):
        sweep.load_spec(_spec(tmp_path, params={"agent.lr": {"low": 1e-4, "high": 1e-3}}))
    with pytest.raises(ConfigError, match=r"agent.batch_size=0: agent.batch_size=0: must be >= 1; "
                                          r"agent.batch_size=-2: .*must be >= 1"):
        sweep.load_spec(_spec(tmp_path, params={"agent.batch_size": [32, 0, 16, -2]}))  # every value is checked
    with pytest.raises(ConfigError, match=r"agent.lr=-1: agent.lr=-1.0: must be > 0"):
        sweep.load_spec(_spec(tmp_path, method="tpe", params={"agent.lr": {"low": -1, "high": 1e-3}}))
    with pytest.raises(ConfigError, match=r"agent.discount=1.5: .*must be in \(0, 1\]"):
        sweep.load_spec(_spec(tmp_path, method="tpe", params={"agent.discount": {"low": 0.9, "high": 1.5}}))
    with pytest.raises(ConfigError, match="log=true needs low > 0"):
        sweep.load_spec(_spec(tmp_path, method="tpe", params={"agent.lr": {"low": 0, "high": 1e-3, "log": True}}))
    assert not (tmp_path / "sweep").exists()  # refused before anything ran
    assert sweep.load_spec(_spec(tmp_path, trials=99)).trials == 3  # a grid's budget is its size
    lr = sweep.load_spec(_spec(tmp_path, method="tpe", params={"agent.lr": {"low": "1e-4", "high": 0.01}})).params[0]
    assert (lr.low, lr.high, lr.is_int) == (1e-4, 0.01, False)


def test_objectives_final_and_area_under_curve():
    rows = [{"frame": 0.0, "episode_reward": 0.0}, {"frame": 100.0, "episode_reward": 10.0},
            {"frame": 300.0, "episode_reward": 10.0}]
    assert sweep.objective_value(rows, "final") == 10.0
    assert sweep.objective_value(rows, "auc") == pytest.approx((0.5 * 100 * 10 + 200 * 10) / 300)


@pytest.mark.slow
def test_local_sweep_records_a_failing_trial_and_resumes_a_killed_one(tmp_path):
    spec = sweep.load_spec(_spec(tmp_path))
    # A sweep killed mid-trial leaves a RUNNING trial in the journal.
    study = sweep.open_study(spec)
    stale = study.ask()
    sweep.suggest(stale, spec)

    records = sweep.run_local(spec)
    assert len(records) == 3 and stale.number not in {r["trial"] for r in records}
    by_cap = {r["params"]["replay_capacity"]: r for r in records}  # 10 passes validation, fails in the run
    assert by_cap[10]["state"] == "fail" and "replay_capacity=10 holds less than one episode" in by_cap[10]["error"]
    for cap in (5000, 4000):
        assert by_cap[cap]["state"] == "complete" and math.isfinite(by_cap[cap]["value"])
        rows = meta.read_eval(Path(by_cap[cap]["run_dir"]))
        assert by_cap[cap]["value"] == pytest.approx(sweep.objective_value(rows, "auc"))
    table = (spec.dir / "trials.csv").read_text()
    assert table.count("complete") == 2 and table.count("fail") == 1

    # Rerunning the finished sweep runs nothing new.
    again = sweep.run_local(sweep.load_spec(_spec(tmp_path)))
    assert sorted(r["trial"] for r in again) == sorted(r["trial"] for r in records)


@pytest.mark.slow
def test_a_trial_whose_report_says_prune_is_stopped_early(tmp_path):
    overrides = [*[a for a in TINY if not a.startswith(("frames", "eval_every"))], "frames=8000", "eval_every=1000"]
    reports = []

    def report(frame, value):
        reports.append(frame)
        return frame >= 1000

    result = sweep.run_trial(overrides, tmp_path / "trial", "t", "final", report, poll_s=0.05)
    assert result.pruned and result.returncode == 0 and reports == [0, 1000]
    assert max(r["frame"] for r in result.rows) < 8000 and not meta.is_finished(tmp_path / "trial", 8000)


@pytest.mark.slow
def test_ray_tune_path_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    spec = sweep.load_spec(_spec(tmp_path, params={"replay_capacity": [5000, 10]}, pruner="median"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        records = sweep.run_ray(spec, "local")
    finally:
        ray.shutdown()
    by_cap = {r["params"]["replay_capacity"]: r for r in records}
    assert by_cap[5000]["state"] == "complete" and math.isfinite(by_cap[5000]["value"])
    rows = meta.read_eval(Path(by_cap[5000]["run_dir"]))
    assert by_cap[5000]["value"] == pytest.approx(sweep.objective_value(rows, "auc"))
    assert by_cap[10]["state"] == "fail" and "replay_capacity=10 holds less than one episode" in by_cap[10]["error"]


def test_wandb_export_drives_ssrl_train_with_the_same_space(tmp_path):
    path = _spec(tmp_path, method="tpe", trials=7, pruner="median",
                 params={"agent.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "agent.batch_size": [16, 32],
                         "encoder.feature_dim": {"low": 16, "high": 64}})
    out = tmp_path / "wandb.yaml"
    assert cli_main(["sweep", str(path), "--export", "wandb", "--out", str(out)]) == 0
    cfg = yaml.safe_load(out.read_text())
    assert cfg["method"] == "bayes" and cfg["run_cap"] == 7
    assert cfg["metric"] == {"name": "eval/episode_reward", "goal": "maximize"}
    assert cfg["command"][:4] == ["${env}", "ssrl", "train", "${args_no_hyphens}"]
    params = cfg["parameters"]
    assert params["agent.lr"] == {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}
    assert params["agent.batch_size"] == {"values": [16, 32]}
    assert params["encoder.feature_dim"] == {"distribution": "int_uniform", "min": 16, "max": 64}
    assert params["obs"] == {"value": "state"} and "early_terminate" in cfg
    # What `wandb agent` would run parses as an ssrl config.
    args = [f"{k}={v.get('value', v.get('values', [v.get('min')])[0])}" for k, v in params.items()]
    cfg_run = config_lib.parse_overrides(args + cfg["command"][4:])
    assert cfg_run.obs == "state" and cfg_run.wandb and cfg_run.experiment == "tiny"


def test_experiment_names_a_single_runs_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["train", *TINY, "frames=8", "seed_frames=0", "experiment=exp", "seed=3", "progress=false"]) == 0
    run = Path("runs/exp") / multirun.run_name([*TINY, "frames=8", "seed_frames=0", "seed=3"])
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"


def test_wandb_runs_are_grouped_by_experiment_and_tagged_by_task_method_seed(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from ssrl.experiments.offpolicy import Trainer

    seen = {}

    class Run:  # stands in for the wandb service; only the init arguments matter here
        def log(self, *args, **kwargs):
            pass

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kwargs: seen.update(kwargs) or Run())
    cfg = config_lib.parse_overrides([*TINY, "wandb=true", "wandb_mode=offline", "experiment=exp", "seed=2",
                                      f"run_dir={tmp_path}"])
    Trainer(cfg).logger.close()
    assert seen["group"] == "exp" and seen["mode"] == "offline"
    assert {"dmc/cartpole-swingup", "sac", "none", "seed2"} <= set(seen["tags"])
    assert meta.read(tmp_path)["status"] == "started"
