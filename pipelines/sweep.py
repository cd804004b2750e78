"""``autolabel sweep SWEEP.yaml``: expand a grid (or an Optuna study) into runs, launch them, collect one table.

A sweep file::

    name: lander_grid                 # sweep folder: runs/sweeps/<name>/
    command: fit hilander             # any autolabel command (default: run)
    base: [train_features=train.npz]  # fixed overrides for every job
    grid:                             # the cartesian product of these lists
      model.hidden: [64, 128]
      train.lr: [0.01, 0.1]
    metrics: [train_loss, pairwise_f] # columns of the results table (from each run's summary.json)
    launcher: {name: local}           # local | local_gpus | slurm | submitit_local (+ slurm_* settings)
    optuna:                           # instead of grid: a study (needs the `sweep` extra)
      n_trials: 20
      direction: maximize
      metric: pairwise_f
      params: {train.lr: {low: 0.001, high: 0.1, log: true}, model.hidden: {choices: [64, 128, 256]}}
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from autolabel.config import load_config, to_object
from autolabel.engine.io import atomic_write_bytes
from autolabel.errors import ConfigError
from pipelines.launchers import Job, JobResult, LauncherConfig, launch


@dataclass
class OptunaConfig:
    n_trials: int = 10
    direction: str = "maximize"
    metric: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class SweepConfig:
    name: str = "sweep"
    root: str = "runs/sweeps"
    command: str = "run"
    base: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    optuna: Optional[OptunaConfig] = None


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of the grid's value lists, as override dicts (stable order)."""
    if not grid:
        return [{}]
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], (list, tuple)) or not grid[k]:
            raise ConfigError(f"sweep grid '{k}' must be a non-empty list of values, got {grid[k]!r}")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _job(cfg: SweepConfig, sweep_dir: Path, idx: int, assignment: dict[str, Any]) -> Job:
    args = cfg.command.split() + list(cfg.base) + [f"{k}={_fmt_value(v)}" for k, v in assignment.items()]
    return Job(name=f"{idx:03d}", args=args, run_dir=sweep_dir / f"{idx:03d}")


def _lookup(summary: dict, key: str) -> Any:
    node: Any = summary
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def results_table(
    rows: list[tuple[dict[str, Any], JobResult]], metrics: list[str]
) -> tuple[list[str], list[list[Any]]]:
    params = sorted({k for a, _ in rows for k in a})
    header = ["job", *params, *metrics, "returncode", "seconds"]
    table = []
    for a, r in rows:
        table.append([r.name, *[a.get(p) for p in params], *[_lookup(r.summary, m) for m in metrics], r.returncode,
                      round(r.seconds, 1)])  # fmt: skip
    return header, table


def write_table(path: Path, header: list[str], table: list[list[Any]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(table)
    return atomic_write_bytes(path, buf.getvalue().encode())


def print_table(title: str, header: list[str], table: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(str(h))
    for row in table:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(t)


def run_sweep(sweep_file: str | Path, overrides: list[str] = ()) -> Path:  # type: ignore[assignment]
    """Run a sweep; returns the path of ``results.csv``."""
    cfg: SweepConfig = to_object(load_config(SweepConfig, yaml_files=[sweep_file], overrides=list(overrides)))
    sweep_dir = Path(cfg.root) / cfg.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[dict[str, Any], JobResult]] = []
    if cfg.optuna is not None:
        rows = _run_optuna(cfg, sweep_dir)
    else:
        assignments = expand_grid(cfg.grid)
        jobs = [_job(cfg, sweep_dir, i, a) for i, a in enumerate(assignments)]
        print(f"sweep {cfg.name}: {len(jobs)} job(s) with launcher {cfg.launcher.name}")
        rows = list(zip(assignments, launch(jobs, cfg.launcher)))
    header, table = results_table(rows, list(cfg.metrics))
    path = write_table(sweep_dir / "results.csv", header, table)
    print_table(f"sweep {cfg.name}", header, table)
    print(f"results: {path}")
    return path


def _run_optuna(cfg: SweepConfig, sweep_dir: Path) -> list[tuple[dict[str, Any], JobResult]]:
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - optuna is in the dev/sweep extras
        raise ConfigError("optuna sweeps need optuna: pip install -e '.[sweep]'") from e
    oc = cfg.optuna
    assert oc is not None
    if not oc.metric:
        raise ConfigError("optuna.metric must name the summary metric to optimize (e.g. optuna.metric=pairwise_f)")
    if not oc.params:
        raise ConfigError("optuna.params is empty: give each key a {low, high[, log]} range or {choices: [...]}")
    rows: list[tuple[dict[str, Any], JobResult]] = []

    def objective(trial: Any) -> float:
        a: dict[str, Any] = {}
        for key, spec in oc.params.items():
            spec = OmegaConf.to_container(spec) if not isinstance(spec, dict) else spec
            if "choices" in spec:
                a[key] = trial.suggest_categorical(key, list(spec["choices"]))
            elif isinstance(spec.get("low"), int) and isinstance(spec.get("high"), int) and not spec.get("log"):
                a[key] = trial.suggest_int(key, spec["low"], spec["high"])
            else:
                a[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        res = launch([_job(cfg, sweep_dir, trial.number, a)], cfg.launcher, progress=False)[0]
        rows.append((a, res))
        value = _lookup(res.summary, oc.metric)
        if res.returncode != 0 or value is None:
            raise optuna.TrialPruned(f"job failed or reported no '{oc.metric}'")
        return float(value)

    study = optuna.create_study(direction=oc.direction, sampler=optuna.samplers.TPESampler(seed=oc.seed))
    study.optimize(objective, n_trials=oc.n_trials)
    return rows
