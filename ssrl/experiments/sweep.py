"""Hyperparameter sweeps: ``ssrl sweep SPEC.yaml``.

Locally (the default) an Optuna study drives the trials, with its journal in the sweep directory: no server,
and a killed sweep picks up where it stopped (the trial it interrupted resumes from its checkpoint). With
``--address`` the same spec runs on a Ray cluster through Ray Tune (Optuna's samplers via ``OptunaSearch``,
early stopping via Tune's schedulers). ``--export wandb`` writes the equivalent wandb sweep config instead.

Every trial is one ``ssrl train`` process whose run directory is named from its parameters; its ``eval.csv``
rows are the intermediate results used for early stopping. A trial that fails or diverges (NaN) is recorded as
failed and the sweep goes on. Spec (YAML)::

    name: lr-sweep                 # default: the file's stem; results in sweeps/<name> unless dir: is given
    base: {env: dmc/cartpole-swingup, obs: state, frames: 50000}   # fixed overrides of every trial
    method: tpe                    # grid | random | tpe
    trials: 20                     # budget (grid: default and maximum = the grid's size)
    jobs: 2                        # trials at a time (local)
    objective: final               # final (last eval return) | auc (mean return over the eval curve)
    direction: maximize
    pruner: median                 # none | median | halving
    params:
      agent.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
      agent.batch_size: [64, 128, 256]
      encoder.feature_dim: {low: 32, high: 128, step: 32}
    resources: {cpu: 1, gpu: 0}    # per trial, on a Ray cluster
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from ssrl import config as config_lib
from ssrl.errors import ConfigError, require_extra
from ssrl.experiments.multirun import launch_train, run_name
from ssrl.runtime import meta

METHODS = ("grid", "random", "tpe")
OBJECTIVES = ("final", "auc")
PRUNERS = ("none", "median", "halving")
console = Console(soft_wrap=True)


# --------------------------------------------------------------------------------------------------- spec
@dataclass
class Param:
    """One searched key: a list of ``choices``, or a ``low``..``high`` range (int if both ends are ints)."""

    name: str
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)


@dataclass
class Spec:
    name: str
    dir: Path
    base: list[str]
    params: list[Param]
    method: str = "tpe"
    trials: int = 10
    jobs: int = 1
    seed: int = 0
    objective: str = "final"
    direction: str = "maximize"
    pruner: str = "median"
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})

    def frames(self) -> int:
        return config_lib.parse_overrides(list(self.base)).frames


def _number(name: str, value: Any) -> int | float | None:
    """YAML reads ``1e-4`` (no dot) as a string: accept it as the number it means."""
    if value is None or isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"params.{name}: {value!r} is not a number") from None


def _param(name: str, value: Any) -> Param:
    if isinstance(value, list) and value:
        return Param(name, choices=value)
    if isinstance(value, dict) and "values" in value:
        return _param(name, value["values"])
    if isinstance(value, dict) and {"low", "high"} <= set(value):
        unknown = set(value) - {"low", "high", "log", "step"}
        if unknown:
            raise ConfigError(f"params.{name}: unknown field(s) {', '.join(sorted(unknown))}; use low, high, log, step")
        low, high, step = (_number(name, value.get(k)) for k in ("low", "high", "step"))
        return Param(name, low=low, high=high, log=bool(value.get("log", False)), step=step)
    raise ConfigError(f"params.{name}: give a list of values or a mapping with low and high (and log, step)")


def check_trials(spec: Spec) -> None:
    """Validate the config of every value a trial can take, before any trial runs: each choice of each param, and
    both ends of each range (with the other params at their first choice or low end). Every bad value is named."""
    first = {p.name: p.choices[0] if p.choices is not None else p.low for p in spec.params}
    problems = []
    for p in spec.params:
        if p.choices is None:
            if p.low is None or p.high is None or p.low > p.high:
                problems.append(f"params.{p.name}: low={p.low} must be <= high={p.high}")
                continue
            if p.log and p.low <= 0:
                problems.append(f"params.{p.name}: log=true needs low > 0 (low={p.low})")
                continue
        for value in p.choices if p.choices is not None else [p.low, p.high]:
            try:
                config_lib.parse_overrides(spec.base + [f"{k}={value if k == p.name else v}" for k, v in first.items()])
            except ConfigError as e:
                problems.append(f"{p.name}={value}: {e}")
    if problems:
        raise ConfigError("; ".join(problems))


def load_spec(path: Path) -> Spec:
    """Read and check a sweep spec; the config of every value a trial can take is validated (:func:`check_trials`)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or not data["params"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'params:' section")
    known = {"name", "dir", "base", "params", "method", "trials", "jobs", "seed", "objective", "direction", "pruner",
             "resources"}
    if unknown := set(data) - known:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(known))}")
    base = data.get("base") or []
    base = [f"{k}={v}" for k, v in base.items()] if isinstance(base, dict) else [str(b) for b in base]
    name = str(data.get("name", Path(path).stem))
    spec = Spec(name=name, dir=Path(data.get("dir", Path("sweeps") / name)), base=base,
                params=[_param(k, v) for k, v in data["params"].items()],
                **{k: data[k] for k in ("method", "trials", "jobs", "seed", "objective", "direction", "pruner",
                                        "resources") if k in data})
    for key, allowed in (("method", METHODS), ("objective", OBJECTIVES), ("pruner", PRUNERS),
                         ("direction", ("maximize", "minimize"))):
        if getattr(spec, key) not in allowed:
            raise ConfigError(f"{path}: {key}={getattr(spec, key)!r}; choose one of {', '.join(allowed)}")
    if spec.method == "grid":
        if any(p.choices is None for p in spec.params):
            raise ConfigError(f"{path}: method=grid needs a list of values for every param")
        size = math.prod(len(p.choices) for p in spec.params)
        spec.trials = min(int(data.get("trials", size)), size)
    try:
        check_trials(spec)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return spec


# ------------------------------------------------------------------------------------------- one trial
class TrialFailed(RuntimeError):
    """A trial's training process failed or its objective is not finite; the sweep records it and goes on."""


def objective_value(rows: list[dict[str, float]], kind: str) -> float:
    """``final``: the last eval return; ``auc``: the area under the eval curve divided by its frame span
    (the curve's mean return, so runs of different lengths compare)."""
    rewards = np.array([r["episode_reward"] for r in rows], dtype=float)
    frames = np.array([r["frame"] for r in rows], dtype=float)
    if kind == "final" or len(rows) < 2:
        return float(rewards[-1])
    return float(np.trapezoid(rewards, frames) / (frames[-1] - frames[0]))


@dataclass
class TrialResult:
    value: float | None
    rows: list[dict[str, float]]
    returncode: int
    pruned: bool = False
    error: str = ""


def run_trial(overrides: list[str], run_dir: Path, experiment: str, objective: str,
              report: Callable[[int, float], bool], poll_s: float = 0.5) -> TrialResult:
    """Train one trial as an ``ssrl train`` process, calling ``report(frame, objective_so_far)`` for every new
    eval row; when ``report`` returns True the trial is stopped (pruned). A finished run is not retrained."""
    frames = config_lib.parse_overrides(list(overrides)).frames
    proc = None
    if not meta.is_finished(run_dir, frames):
        proc = launch_train([*overrides, f"experiment={experiment}"], run_dir)
    seen, pruned = 0, False
    try:
        while True:
            running = proc is not None and proc.poll() is None
            rows = meta.read_eval(run_dir)
            for i in range(seen, len(rows)):
                if report(int(rows[i]["frame"]), objective_value(rows[: i + 1], objective)):
                    pruned = True
                    break
            seen = len(rows)
            if pruned or not running:
                break
            time.sleep(poll_s)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait()
    rc = 0 if proc is None or pruned else proc.returncode
    rows = meta.read_eval(run_dir)
    value = objective_value(rows, objective) if rows else None
    error = ""
    if rc != 0:
        log = run_dir / "train.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        error = f"exit {rc}: {lines[-1] if lines else 'no output'}"
    return TrialResult(value, rows, rc, pruned, error)


def trial_dir(spec: Spec, params: dict[str, Any]) -> Path:
    return (spec.dir / "trials" / run_name([f"{k}={v}" for k, v in params.items()], set(params))).resolve()


# ----------------------------------------------------------------------------------------- local: Optuna
def suggest(trial: Any, spec: Spec) -> dict[str, Any]:
    """Draw one value per param from an Optuna trial (used locally and by Ray's ``OptunaSearch``)."""
    out = {}
    for p in spec.params:
        if p.choices is not None:
            out[p.name] = trial.suggest_categorical(p.name, p.choices)
        elif p.is_int:
            out[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log, step=int(p.step or 1))
        else:
            out[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log, step=p.step)
    return out


def _sampler(spec: Spec) -> Any:
    import optuna

    if spec.method == "grid":
        return optuna.samplers.GridSampler({p.name: p.choices for p in spec.params}, seed=spec.seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(1, spec.trials // 3)))


def _pruner(spec: Spec) -> Any:
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(spec: Spec) -> Any:
    """The sweep's Optuna study, stored as a journal file in the sweep directory (created or resumed)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    spec.dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(spec.dir / "optuna.journal")))
    return optuna.create_study(study_name=spec.name, storage=storage, sampler=_sampler(spec), pruner=_pruner(spec),
                               direction=spec.direction, load_if_exists=True)


def _interrupted(study: Any) -> set[int]:
    """Trials a killed sweep left unfinished (each was queued again as a new trial)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    return {n for t in study.trials if (n := Retry.retried_trial_number(t)) is not None}


def run_local(spec: Spec) -> list[dict[str, Any]]:
    """Run the sweep with Optuna on this machine, ``spec.jobs`` trials at a time. Returns the trial records."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported below
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the retry callback's API
    study = open_study(spec)
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a killed sweep
        study.tell(t.number, state=TrialState.FAIL)
        retry(study, study.trials[t.number])  # queued again with its params; its run resumes from checkpoint
    interrupted = _interrupted(study)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                TrialState.FAIL)) if t.number not in interrupted]
    remaining = spec.trials - len(done)
    console.print(f"[bold]sweep[/] {spec.name}: {spec.method}, {len(done)} of {spec.trials} trials done, "
                  f"{spec.jobs} at a time -> {spec.dir}")

    def objective(trial: Any) -> float:
        """One trial; any failure is recorded with its error and raised as TrialFailed (the sweep goes on)."""
        params = suggest(trial, spec)
        try:
            return run_one(trial, params)
        except (TrialFailed, optuna.TrialPruned):
            raise
        except Exception as e:  # noqa: BLE001 (any failure of one trial is that trial's)
            error = f"{type(e).__name__}: {' '.join(str(e).split())}"
            trial.set_user_attr("error", error)
            console.print(f"trial {trial.number} {params}: [red]failed[/] ({error})")
            raise TrialFailed(error) from e

    def run_one(trial: Any, params: dict[str, Any]) -> float:
        run_dir = trial_dir(spec, params)
        trial.set_user_attr("run_dir", str(run_dir))

        def report(frame: int, value: float) -> bool:
            if not math.isfinite(value):
                return False
            trial.report(value, frame)
            return trial.should_prune()

        result = run_trial(spec.base + [f"{k}={v}" for k, v in params.items()], run_dir, spec.name,
                           spec.objective, report)
        if result.pruned:
            console.print(f"trial {trial.number} {params}: pruned")
            raise optuna.TrialPruned()
        if result.returncode != 0 or result.value is None or not math.isfinite(result.value):
            trial.set_user_attr("error", result.error or f"objective is {result.value}")
            console.print(f"trial {trial.number} {params}: [red]failed[/] ({trial.user_attrs['error']})")
            raise TrialFailed(trial.user_attrs["error"])
        console.print(f"trial {trial.number} {params}: {spec.objective} = {result.value:.2f}")
        return result.value

    if remaining > 0:
        study.optimize(objective, n_trials=remaining, n_jobs=max(1, spec.jobs), catch=(TrialFailed,))
    interrupted = _interrupted(study)
    records = [{"trial": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                "run_dir": t.user_attrs.get("run_dir", ""), "error": t.user_attrs.get("error", "")}
               for t in study.trials if t.number not in interrupted]
    write_trials(spec, records)
    return records


def write_trials(spec: Spec, records: list[dict[str, Any]]) -> Path:
    """``trials.csv`` in the sweep directory: one row per trial (state, objective, params, run dir, error)."""
    path = spec.dir / "trials.csv"
    names = [p.name for p in spec.params]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", spec.objective, *names, "run_dir", "error"])
        for r in records:
            writer.writerow([r["trial"], r["state"], r["value"], *[r["params"].get(n) for n in names], r["run_dir"],
                             r["error"]])
    return path


# ---------------------------------------------------------------------------------------- cluster: Ray
def run_ray(spec: Spec, address: str) -> list[dict[str, Any]]:
    """Run the sweep through Ray Tune on the cluster at ``address`` (``local`` starts a local instance).
    Trials write to ``spec.dir``, which must be on a filesystem every node sees. Returns the trial records."""
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ImportError("--address needs Ray Tune: pip install 'ssrl[sweep]'") from None

    spec.dir = spec.dir.resolve()
    spec.dir.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    mode = "max" if spec.direction == "maximize" else "min"
    frames = spec.frames()
    if spec.pruner == "median":
        scheduler = MedianStoppingRule(time_attr="frame", metric="objective", mode=mode, min_samples_required=2)
    elif spec.pruner == "halving":
        scheduler = ASHAScheduler(time_attr="frame", metric="objective", mode=mode, max_t=frames,
                                  grace_period=max(1, frames // 8), reduction_factor=2)
    else:
        scheduler = FIFOScheduler()
    if spec.method == "grid":
        search, samples = None, 1
        space: dict[str, Any] = {p.name: tune.grid_search(p.choices) for p in spec.params}
    else:
        def define_by_run(trial: Any) -> None:
            suggest(trial, spec)

        search = OptunaSearch(define_by_run, metric="objective", mode=mode, sampler=_sampler(spec))
        samples, space = spec.trials, {}
    base, name, objective = list(spec.base), spec.name, spec.objective

    def trainable(params: dict[str, Any]) -> None:
        run_dir = trial_dir(spec, params)
        overrides = base + [f"{k}={v}" for k, v in params.items()]
        result = run_trial(overrides, run_dir, name, objective,
                           lambda frame, value: tune.report({"objective": value, "frame": frame}) or False)
        if result.returncode != 0 or result.value is None or not math.isfinite(result.value):
            raise TrialFailed(f"trial {run_dir.name} failed: {result.error or f'objective is {result.value}'}")

    resources = {k: float(v) for k, v in spec.resources.items()}
    runnable = tune.with_resources(trainable, resources)
    path = spec.dir / "ray" / name
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), runnable, resume_unfinished=True)
    else:
        tuner = tune.Tuner(runnable, param_space=space,
                           tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=samples,
                                                       max_concurrent_trials=max(1, spec.jobs)),
                           run_config=tune.RunConfig(name=name, storage_path=str(spec.dir / "ray"), verbose=0))
    records = []
    for i, result in enumerate(tuner.fit()):
        value, frame = result.metrics.get("objective"), result.metrics.get("frame", 0)
        state = "fail" if result.error else ("complete" if frame >= frames else "stopped")  # pruned or interrupted
        records.append({"trial": i, "state": state, "value": None if result.error else value,
                        "params": result.config, "run_dir": str(trial_dir(spec, result.config)),
                        "error": str(result.error).strip().splitlines()[-1] if result.error else ""})
    write_trials(spec, records)
    return records


# ----------------------------------------------------------------------------------------- wandb export
def wandb_config(spec: Spec) -> dict[str, Any]:
    """The equivalent wandb sweep config: ``wandb sweep`` it, and ``wandb agent`` runs ``ssrl train``."""
    parameters: dict[str, Any] = {}
    for item in spec.base:
        key, _, value = item.partition("=")
        parameters[key] = {"value": yaml.safe_load(value)}
    for p in spec.params:
        if p.choices is not None:
            parameters[p.name] = {"values": p.choices}
        elif p.is_int:
            parameters[p.name] = {"distribution": "q_log_uniform_values" if p.log else "int_uniform",
                                  "min": p.low, "max": p.high} | ({"q": p.step or 1} if p.log else {})
        else:
            parameters[p.name] = {"distribution": "log_uniform_values" if p.log else "uniform",
                                  "min": float(p.low), "max": float(p.high)}
    out = {"name": spec.name, "program": "ssrl",
           "method": {"grid": "grid", "random": "random", "tpe": "bayes"}[spec.method],
           "metric": {"name": "eval/episode_reward", "goal": spec.direction},
           "parameters": parameters,
           "command": ["${env}", "ssrl", "train", "${args_no_hyphens}", f"experiment={spec.name}", "wandb=true"]}
    if spec.method != "grid":
        out["run_cap"] = spec.trials
    if spec.pruner != "none":
        out["early_terminate"] = {"type": "hyperband", "min_iter": 2}
    return out


# ------------------------------------------------------------------------------------------------ CLI
def summary(spec: Spec, records: list[dict[str, Any]]) -> None:
    """Print every trial, best first."""
    sign = -1 if spec.direction == "maximize" else 1
    ordered = sorted(records, key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0)))
    table = Table("trial", "state", spec.objective, *[p.name for p in spec.params], "note")
    for r in ordered:
        table.add_row(str(r["trial"]), r["state"], "-" if r["value"] is None else f"{r['value']:.2f}",
                      *[str(r["params"].get(p.name, "")) for p in spec.params], r["error"][:80])
    console.print(table)
    failed = [r for r in records if r["state"] == "fail"]
    if failed:
        console.print(f"[red]{len(failed)} of {len(records)} trials failed[/]:")
        for r in failed:
            params = " ".join(f"{k}={v}" for k, v in r["params"].items())
            console.print(f"  trial {r['trial']} {params}: {r['error'] or 'no error recorded'}")
    console.print(f"trials: {spec.dir / 'trials.csv'}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssrl sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="sweep spec (YAML)")
    parser.add_argument("--address", help="Ray cluster address (e.g. auto, ray://head:10001; 'local' starts one)")
    parser.add_argument("--export", choices=["wandb"], help="write the equivalent sweep config and exit")
    parser.add_argument("--out", type=Path, help="where --export writes (default: <sweep dir>/wandb_sweep.yaml)")
    ns = parser.parse_args(argv)
    try:
        spec = load_spec(ns.spec)
        if ns.export:
            out = ns.out or spec.dir / "wandb_sweep.yaml"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(yaml.safe_dump(wandb_config(spec), sort_keys=False))
            note = " (wandb optimises the last eval/episode_reward; it has no area-under-curve objective)" \
                if spec.objective == "auc" else ""
            console.print(f"wrote {out}{note}\nrun it with: wandb sweep {out} && wandb agent <sweep id>")
            return 0
        require_extra("sweep", "optuna", *(["ray"] if ns.address else []))
        summary(spec, run_ray(spec, ns.address) if ns.address else run_local(spec))
    except (ConfigError, FileNotFoundError, ImportError) as e:
        print(f"ssrl sweep: error: {e}", file=sys.stderr)
        return 2
    return 0
