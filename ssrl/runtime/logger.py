"""Run logging: CSV files always (``train.csv``, ``eval.csv``), wandb when asked. Keys are namespaced
``train/...`` and ``eval/...`` in wandb; turning wandb off changes nothing else."""

from __future__ import annotations

import csv
import math
import uuid
from pathlib import Path
from typing import Any

from ssrl import config as config_lib
from ssrl import files
from ssrl.config import TrainConfig


class CSVLog:
    """An append-only CSV whose header grows when new keys appear (the file is rewritten then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] = []
        if path.exists():
            with path.open(newline="") as f:
                self.fields = next(csv.reader(f), [])

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with files.atomic_writer(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.fields]
        if new or not self.path.exists():
            self.fields += new
            self._rewrite(self.rows())
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)

    def keep_first(self, count: int) -> None:
        """Keep only the first ``count`` rows (a resumed run redoes the work logged after its checkpoint)."""
        if self.path.exists():
            self._rewrite(self.rows()[:count])

    def truncate_after(self, frame: int) -> None:
        """Drop rows logged after ``frame`` (for logs with at most one row per frame)."""
        if self.path.exists():
            self._rewrite([r for r in self.rows() if float(r["frame"]) <= frame])


class Logger:
    """Writes ``<run_dir>/<namespace>.csv`` and, optionally, the same rows to wandb."""

    def __init__(self, run_dir: Path, wandb_run: Any = None, namespaces: tuple[str, ...] = ("train", "eval")) -> None:
        self.csv = {ns: CSVLog(run_dir / f"{ns}.csv") for ns in namespaces}
        self.wandb_run = wandb_run

    def log(self, namespace: str, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise FloatingPointError(f"{namespace}/{key} is {value} at frame {row.get('frame')}: training diverged")
        self.csv[namespace].write(row)
        if self.wandb_run is not None:
            self.wandb_run.log({f"{namespace}/{k}": v for k, v in row.items()}, step=int(row["frame"]))

    def keep_first(self, counts: dict[str, int]) -> None:
        """Keep the first ``counts[namespace]`` rows of each CSV: those logged before the checkpoint."""
        for namespace, log in self.csv.items():
            log.keep_first(counts[namespace])

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def start_wandb(run_dir: Path, config: dict[str, Any], project: str, mode: str, name: str, tags: list[str],
                group: str | None = None) -> Any:
    """Start (or resume, by the id stored in the run directory) a wandb run in ``group`` (default: the env).
    ``mode="offline"`` needs no account; sync later with ``wandb sync <run_dir>/wandb``."""
    try:
        import wandb
    except ImportError:
        raise ImportError("wandb=true needs wandb: pip install 'ssrl[wandb]'") from None
    id_file = run_dir / "wandb_id.txt"
    # A local id: wandb 0.31 no longer has `wandb.util.generate_id`.
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id)
    return wandb.init(project=project, dir=str(run_dir), config=config, id=run_id, resume="allow", mode=mode,
                      name=name, group=group or config.get("env"), tags=tags)


def start_logging(cfg: TrainConfig, run_dir: Path, rows: dict[str, int]) -> Logger:
    """The run's Logger (wandb if asked), keeping the first ``rows[namespace]`` CSV rows (those before the
    checkpoint), after recording the config and the session in ``run_dir``."""
    config_lib.save(cfg, run_dir / "config.yaml")
    wandb_run = None
    if cfg.wandb and cfg.wandb_mode != "disabled":
        name = f"{cfg.env}/{cfg.agent.name}-{cfg.representation.name}/seed{cfg.seed}"
        tags = [cfg.env, cfg.agent.name, cfg.representation.name, f"seed{cfg.seed}"]
        wandb_run = start_wandb(run_dir, config_lib.to_dict(cfg), cfg.wandb_project, cfg.wandb_mode, name,
                                tags, group=cfg.experiment or cfg.env)
    logger = Logger(run_dir, wandb_run)
    logger.keep_first(rows)
    return logger
