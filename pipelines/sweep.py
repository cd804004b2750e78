"""``autolabel sweep SWEEP.yaml``: expand a grid (or an Optuna study) into runs, launch them, collect one table.

A sweep file::

    name: lander_grid                 # sweep folder: runs/sweeps/<name>/
    command: fit hilander             # any autolabel command (default: run)
    base: [train_features=train.npz]  # fixed overrides for every job
    grid:                             # the cartesian product of these lists
      model.hidden: [64, 128]
      train.lr: [0.01, 0.1]
    metrics: [train_loss, pairwise_f] # columns of the results table (from each run's summary.json)
    rank_by: pairwise_f               # results.csv best first by this metric ("-name": smaller is better)
    finish: [until_stage=null]        # optional, with rank_by: run the best job again with these overrides appended
    launcher: {name: local}           # local | local_gpus | slurm | submitit_local (+ slurm_* settings)
    optuna:                           # instead of grid: a study (needs the `sweep` extra)
      n_trials: 20
      direction: maximize
      metric: pairwise_f
      params: {train.lr: {low: 0.001, high: 0.1, log: true}, model.hidden: {choices: [64, 128, 256]}}
      prune_metric: train/link_acc_epoch   # optional: stop trials whose curve trails the median (launcher=local)
      prune_stage: hilander                # pipelines: the stage whose logs/metrics.csv holds prune_metric
      storage: sqlite:///runs/sweeps/lander.db   # optional: a persistent study; rerunning the sweep resumes it
      enqueue: [{train.lr: 0.01, model.hidden: 128}] # optional: parameter sets to try first

A trial whose job fails (non-zero exit, or no ``metric`` in its summary) is recorded as failed, one stopped by the
pruner as pruned. With ``storage``, rerunning an interrupted sweep continues the study: finished trials are kept, a
trial that was running is tried again in its own run directory (so its training resumes from ``last.ckpt``), and only
the trials still missing from ``n_trials`` are run.

``finish`` turns "try several, keep the best" into one command: once the table is ranked, the best job runs again in
its own run directory with ``finish`` appended to its arguments -- e.g. a pipeline swept up to an early stage
(``until_stage=labels``) and finished with ``until_stage=null``: its stages done in the sweep are skipped, the rest
run. The outcome goes to ``best.json`` beside ``results.csv``.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from autolabel.config import load_config, to_object
from autolabel.engine.io import atomic_write_bytes
from autolabel.errors import ConfigError
from pipelines.commands.base import Command, job_trainer
from pipelines.launchers import Job, JobResult, LauncherConfig, launch, run_local_monitored, summary_of


@dataclass
class OptunaConfig:
    n_trials: int = 10
    direction: str = "maximize"
    metric: str = ""  # the run's summary metric to optimize
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    # Pruning (launcher=local): while a trial trains, its logs/metrics.csv column `prune_metric` (same direction as
    # `metric`, e.g. val/loss when minimizing a loss) is reported step by step; the pruner stops hopeless trials.
    prune_metric: str = ""  # empty: no pruning
    pruner: str = "median"  # median (optuna MedianPruner) | threshold (stop past prune_lower / prune_upper)
    prune_startup_trials: int = 2  # median: trials that always run to the end first
    prune_warmup_steps: int = 0  # steps of every trial that are never pruned
    prune_lower: Optional[float] = None
    prune_upper: Optional[float] = None
    prune_interval_s: float = 2.0  # how often a running trial's metrics are read
    # A pipeline (command: run) logs one metrics.csv per training stage, each with its own step counter: the pruner
    # reads only this stage's (a stage folder, e.g. hilander or downstream/synthetic); empty: the first stage folder
    # whose logs/metrics.csv has prune_metric.
    prune_stage: str = ""
    storage: str = ""  # an Optuna storage URL, e.g. sqlite:///runs/sweeps/study.db: the study survives interruptions
    study_name: str = ""  # default: the sweep's name
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # parameter sets the study tries first


@dataclass
class SweepConfig:
    name: str = "sweep"
    root: str = "runs/sweeps"
    command: str = "run"
    base: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    rank_by: str = ""  # a metric: results.csv lists the runs best first by it ("-name": smaller is better)
    finish: list[str] = field(default_factory=list)  # with rank_by: rerun the best job with these overrides appended
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


def _job(
    cfg: SweepConfig, sweep_dir: Path, idx: int, assignment: dict[str, Any], commands: Mapping[str, Command]
) -> Job:
    """Job ``idx``: its command line, pinned run directory, and the devices / nodes its resolved config trains on
    (an invalid job fails here, before anything is launched)."""
    args = cfg.command.split() + list(cfg.base) + [f"{k}={_fmt_value(v)}" for k, v in assignment.items()]
    devices, nodes = job_trainer(args, commands) if commands else (1, 1)
    return Job(name=f"{idx:03d}", args=args, run_dir=sweep_dir / f"{idx:03d}", devices=devices, nodes=nodes)


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
    header = ["job", *params, *metrics, "status", "returncode", "seconds"]
    table = []
    for a, r in rows:
        status = r.status or ("pruned" if r.pruned else "done" if r.returncode == 0 else "failed")
        table.append(
            [
                r.name,
                *[a.get(p) for p in params],
                *[_lookup(r.summary, m) for m in metrics],
                status,
                r.returncode,
                round(r.seconds, 1),
            ]
        )
    return header, table


def rank_rows(header: list[str], table: list[list[Any]], rank_by: str) -> list[list[Any]]:
    """Rows best first by column ``rank_by`` (largest first; ``-name``: smallest first); rows without it last."""
    name = rank_by.lstrip("-")
    if name not in header:
        raise ConfigError(f"rank_by={rank_by!r} is not one of the sweep's metrics {header}; add it to metrics")
    col, sign = header.index(name), (1 if rank_by.startswith("-") else -1)
    return sorted(table, key=lambda r: (not isinstance(r[col], (int, float)), sign * (r[col] or 0)))


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


def run_sweep(
    sweep_file: str | Path,
    overrides: list[str] = (),  # type: ignore[assignment]
    commands: Mapping[str, Command] | None = None,
) -> Path:
    """Run a sweep; returns the path of ``results.csv``. ``commands`` (the CLI's registry) resolves each job's
    config, so that launchers place it on the devices and nodes it trains with."""
    commands = commands or {}
    cfg: SweepConfig = to_object(load_config(SweepConfig, yaml_files=[sweep_file], overrides=list(overrides)))
    if cfg.finish and not cfg.rank_by:
        raise ConfigError(
            f"sweep finish={list(cfg.finish)} needs rank_by=METRIC: it reruns the best job by that metric"
        )
    sweep_dir = Path(cfg.root) / cfg.name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "best.json").unlink(missing_ok=True)  # describes this invocation's finish only
    rows: list[tuple[dict[str, Any], JobResult]] = []
    if cfg.optuna is not None:
        rows = _run_optuna(cfg, sweep_dir, commands)
    else:
        assignments = expand_grid(cfg.grid)
        jobs = [_job(cfg, sweep_dir, i, a, commands) for i, a in enumerate(assignments)]
        print(f"sweep {cfg.name}: {len(jobs)} job(s) with launcher {cfg.launcher.name}")
        rows = list(zip(assignments, launch(jobs, cfg.launcher)))
    header, table = results_table(rows, list(cfg.metrics))
    if cfg.rank_by:
        table = rank_rows(header, table, cfg.rank_by)
    path = write_table(sweep_dir / "results.csv", header, table)
    print_table(f"sweep {cfg.name}", header, table)
    print(f"results: {path}")
    if cfg.finish:
        finish_best(cfg, sweep_dir, rows, header, table, commands)
    return path


def finish_best(
    cfg: SweepConfig,
    sweep_dir: Path,
    rows: list[tuple[dict[str, Any], JobResult]],
    header: list[str],
    ranked: list[list[Any]],
    commands: Mapping[str, Command],
) -> dict[str, Any]:
    """Run the best-ranked job again in its run directory with ``cfg.finish`` appended; record it in ``best.json``
    (nothing runs when the best row has no value or did not finish)."""
    from autolabel.engine.io import write_json

    name = cfg.rank_by.lstrip("-")
    best = ranked[0] if ranked else None
    value = best[header.index(name)] if best else None
    record: dict[str, Any] = {"rank_by": cfg.rank_by, "finish": list(cfg.finish)}
    if best is None or best[header.index("status")] != "done" or not isinstance(value, (int, float)):
        print(f"finish: no job finished and reported {name}: nothing to finish")
        record["job"] = None
        write_json(sweep_dir / "best.json", record)
        return record
    assignment, result = next((a, r) for a, r in rows if r.name == best[0])
    args = [*_job(cfg, sweep_dir, 0, assignment, {}).args, *cfg.finish]
    devices, nodes = job_trainer(args, commands) if commands else (1, 1)  # what the finishing run trains on
    job = Job(result.name, args, result.run_dir, devices=devices, nodes=nodes)
    print(f"finish: the best job {result.name} ({name} {value:.4g}) runs again with {' '.join(cfg.finish)}")
    res = launch([job], cfg.launcher)[0]
    record.update(job=result.name, params=assignment, value=value, run_dir=str(result.run_dir),
                  returncode=res.returncode, seconds=round(res.seconds, 1), summary=res.summary)  # fmt: skip
    write_json(sweep_dir / "best.json", record)
    verdict = "done" if res.returncode == 0 else f"FAILED (exit {res.returncode}, see {result.run_dir / 'job.log'})"
    print(f"finish: {verdict}: {result.run_dir}")
    return record


def _pruning_check(trial: Any, run_dir: Path, column: str, stage: str = "") -> Callable[[], bool]:
    """Reports the new values of ``column`` from ONE ``logs/metrics.csv`` of the trial (``<run_dir>/<stage>/`` when
    ``stage`` is given, else the first stage folder that logs ``column``: every training stage of a pipeline logs its
    own steps, mixing them would report one stage's step 10 as another's); True when the trial should stop."""
    from autolabel.viz import read_metrics_csv

    reported: set[int] = set()
    chosen: list[Path] = [run_dir / stage / "logs" / "metrics.csv"] if stage else []

    def series_of(path: Path) -> list[tuple[float, float]] | None:
        try:
            return read_metrics_csv(path).get(column)
        except (OSError, ValueError):  # being written right now: read it next time
            return None

    def check() -> bool:
        if not chosen:
            found = [
                p for p in sorted(run_dir.glob("**/logs/metrics.csv"), key=lambda p: p.stat().st_mtime) if series_of(p)
            ]
            if not found:
                return False
            chosen.append(found[0])
            if len(found) > 1:
                print(
                    f"trial {trial.number}: several stages log {column}; pruning on "
                    f"{found[0].parent.parent.relative_to(run_dir)} (set optuna.prune_stage to choose)"
                )
        for step, value in series_of(chosen[0]) or []:
            if int(step) not in reported:
                reported.add(int(step))
                trial.report(value, int(step))
        return bool(reported) and trial.should_prune()

    return check


class TrialFailed(Exception):
    """A trial's job failed: Optuna records the trial as FAIL (not PRUNED) and the study goes on."""


def _run_optuna(
    cfg: SweepConfig, sweep_dir: Path, commands: Mapping[str, Command]
) -> list[tuple[dict[str, Any], JobResult]]:
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
    if oc.prune_metric and cfg.launcher.name != "local":
        raise ConfigError(
            f"optuna.prune_metric needs launcher=local (got {cfg.launcher.name}): the sweep process must "
            "watch each trial's metrics while it runs; clear optuna.prune_metric to sweep elsewhere"
        )
    if oc.pruner not in ("median", "threshold"):
        raise ConfigError(f"optuna.pruner={oc.pruner!r}: use median or threshold")

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
        job = _job(cfg, sweep_dir, trial.number, a, commands)
        if "run_dir" in trial.user_attrs:  # an interrupted trial tried again: continue in its run directory
            job = Job(
                trial.user_attrs.get("job", job.name),
                job.args,
                Path(trial.user_attrs["run_dir"]),
                devices=job.devices,
                nodes=job.nodes,
            )
        trial.set_user_attr("job", job.name)
        trial.set_user_attr("run_dir", str(job.run_dir))
        if oc.prune_metric:
            check = _pruning_check(trial, job.run_dir, oc.prune_metric, oc.prune_stage)
            res = run_local_monitored(job, check, oc.prune_interval_s)
        else:
            res = launch([job], cfg.launcher, progress=False)[0]
        trial.set_user_attr("returncode", int(res.returncode))
        trial.set_user_attr("seconds", round(float(res.seconds), 1))
        if res.pruned:
            raise optuna.TrialPruned(f"pruned on {oc.prune_metric}")
        value = _lookup(res.summary, oc.metric)
        if res.returncode != 0:
            raise TrialFailed(f"job {job.name} exited with {res.returncode}: see {job.run_dir / 'job.log'}")
        if value is None:
            raise TrialFailed(f"job {job.name} reported no '{oc.metric}' in {job.run_dir / 'summary.json'}")
        return float(value)

    if oc.pruner == "threshold":
        pruner: Any = optuna.pruners.ThresholdPruner(
            lower=oc.prune_lower, upper=oc.prune_upper, n_warmup_steps=oc.prune_warmup_steps
        )
    else:
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=oc.prune_startup_trials, n_warmup_steps=oc.prune_warmup_steps
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=oc.direction,
        sampler=optuna.samplers.TPESampler(seed=oc.seed),
        pruner=pruner,
        storage=oc.storage or None,
        study_name=oc.study_name or cfg.name,
        load_if_exists=bool(oc.storage),
    )
    states = optuna.trial.TrialState
    finished = [t for t in study.trials if t.state in (states.COMPLETE, states.PRUNED, states.FAIL)]
    interrupted = [t for t in study.trials if t.state == states.RUNNING]
    for t in interrupted:  # a sweep killed mid-trial: fail that attempt, try the same parameters again in place
        study.tell(t.number, state=states.FAIL)
        study.enqueue_trial(t.params, user_attrs={k: t.user_attrs[k] for k in ("job", "run_dir") if k in t.user_attrs})
    if not study.trials:
        for params in oc.enqueue:
            study.enqueue_trial(dict(params))
    remaining = max(0, oc.n_trials - len(finished))
    if finished or interrupted:
        print(
            f"study {study.study_name}: {len(finished)} trial(s) done before, {len(interrupted)} interrupted "
            f"(tried again), {remaining} to run"
        )
    study.optimize(objective, n_trials=remaining, catch=(TrialFailed,))
    return _study_rows(study, sweep_dir)


def _study_rows(study: Any, sweep_dir: Path) -> list[tuple[dict[str, Any], JobResult]]:
    """One table row per trial of the study (also those of earlier, interrupted invocations); a trial retried in the
    same run directory replaces its interrupted attempt."""
    import optuna

    states = optuna.trial.TrialState
    by_dir: dict[str, tuple[dict[str, Any], JobResult]] = {}
    for t in study.trials:
        if t.state not in (states.COMPLETE, states.PRUNED, states.FAIL):
            continue
        run_dir = Path(t.user_attrs.get("run_dir", sweep_dir / f"{t.number:03d}"))
        status = {states.COMPLETE: "done", states.PRUNED: "pruned", states.FAIL: "failed"}[t.state]
        res = JobResult(
            t.user_attrs.get("job", f"{t.number:03d}"),
            run_dir,
            int(t.user_attrs.get("returncode", -1)),
            float(t.user_attrs.get("seconds", 0.0)),
            summary_of(run_dir),
            pruned=t.state == states.PRUNED,
            status=status,
        )
        by_dir[str(run_dir)] = (dict(t.params), res)
    return list(by_dir.values())
