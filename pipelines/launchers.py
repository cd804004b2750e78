"""Launchers: where jobs run. ``local`` (one after another), ``local_gpus`` (one job per GPU at a time), ``slurm``
(submitit; job arrays; a preempted job is requeued and resumes from its last checkpoint).

A job is an ``autolabel`` command line plus a pinned run directory, so that a requeued or retried job finds its own
checkpoints, and so that results can be collected from ``<run_dir>/summary.json`` afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from autolabel.engine.io import read_json
from autolabel.errors import ConfigError

LAUNCHERS = ("local", "local_gpus", "slurm", "submitit_local")


@dataclass
class Job:
    name: str
    args: list[str]  # e.g. ["fit", "hilander", "train_features=...", "model.hidden=64"]
    run_dir: Path
    pin_run_dir: bool = True  # append run.dir=<run_dir> (every training command takes it)
    # what the job trains on, from its resolved config (the sweep resolves it: pipelines.commands.base.job_trainer);
    # devices None: "auto" / -1. SLURM placement follows these.
    devices: Optional[int] = 1
    nodes: int = 1

    def argv(self) -> list[str]:
        return [*self.args, f"run.dir={self.run_dir}"] if self.pin_run_dir else list(self.args)


@dataclass
class JobResult:
    name: str
    run_dir: Path
    returncode: int
    seconds: float
    summary: dict = field(default_factory=dict)
    pruned: bool = False  # stopped early by a sweep's pruner (its returncode is the termination signal's)
    status: str = ""  # done | failed | pruned when known better than the returncode says (an Optuna trial's state)


@dataclass
class LauncherConfig:
    """Where and how jobs run. The ``slurm_*`` keys place each job; unset placement keys follow the job's own trainer
    settings, because Lightning's SLURM environment needs exactly one task per device: ``slurm_tasks_per_node``
    defaults to the job's ``trainer.devices``, ``slurm_nodes`` to its ``trainer.num_nodes`` and
    ``slurm_gpus_per_node`` to the tasks per node."""

    name: str = "local"
    gpus: int = -1  # local_gpus: how many GPUs to use (-1: all visible)
    slurm_partition: Optional[str] = None
    slurm_time_min: int = 240  # the job's time limit (timeout_min); submitit_local uses it too
    slurm_nodes: Optional[int] = None  # default: the job's trainer.num_nodes
    slurm_tasks_per_node: Optional[int] = None  # default: the job's trainer.devices (1 when it is "auto")
    slurm_gpus_per_node: Optional[int] = None  # default: slurm_tasks_per_node
    slurm_cpus_per_task: int = 8
    slurm_mem_gb: int = 64
    slurm_signal_delay_s: int = 120  # SLURM sends the preemption/timeout signal this long before the end
    slurm_array_parallelism: int = 16
    slurm_additional: dict[str, Any] = field(default_factory=dict)
    folder: str = "runs/_submitit"

    def __post_init__(self) -> None:
        for key in ("slurm_nodes", "slurm_tasks_per_node", "slurm_gpus_per_node"):
            v = getattr(self, key)
            if v is not None and v < (0 if key == "slurm_gpus_per_node" else 1):
                raise ConfigError(
                    f"launcher.{key}={v} must be >= {0 if key == 'slurm_gpus_per_node' else 1} "
                    "(or unset: follow the job's trainer settings)"
                )


def summary_of(run_dir: Path) -> dict:
    p = run_dir / "summary.json"
    try:
        return read_json(p) if p.is_file() else {}
    except (OSError, ValueError):
        return {}


def run_cli(argv: Sequence[str], env: dict[str, str] | None = None, log_path: Path | None = None) -> int:
    """Run ``autolabel ARGV`` in a fresh Python process (so each job has its own CUDA context and env)."""
    cmd = [sys.executable, "-m", "pipelines.cli", *argv]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("AUTOLABEL_RUN_DIR", None)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.run(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    return subprocess.run(cmd, env=full_env, check=False).returncode


def _log_name() -> str:
    """``job.log``; the other tasks of a multi-task SLURM job write ``job.rank<N>.log``."""
    rank = os.environ.get("SLURM_PROCID", "0")
    return "job.log" if rank in ("", "0") else f"job.rank{rank}.log"


def _run_local(job: Job, env: dict[str, str] | None = None) -> JobResult:
    t0 = time.perf_counter()
    job.run_dir.mkdir(parents=True, exist_ok=True)
    rc = run_cli(job.argv(), env=env, log_path=job.run_dir / _log_name())
    return JobResult(job.name, job.run_dir, rc, time.perf_counter() - t0, summary_of(job.run_dir))


def run_local_monitored(job: Job, should_stop: Callable[[], bool], interval_s: float = 2.0) -> JobResult:
    """Run ``job`` in a subprocess, asking ``should_stop()`` every ``interval_s`` seconds while it runs; when it says
    so the job is terminated (SIGTERM, then SIGKILL after 10 s) and the result is marked ``pruned``."""
    t0 = time.perf_counter()
    job.run_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AUTOLABEL_RUN_DIR"}
    with open(job.run_dir / "job.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", *job.argv()], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        pruned = False
        while True:
            try:
                rc = proc.wait(timeout=interval_s)
                break
            except subprocess.TimeoutExpired:
                if should_stop():
                    pruned = True
                    proc.terminate()
                    try:
                        rc = proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        rc = proc.wait()
                    break
    return JobResult(job.name, job.run_dir, rc, time.perf_counter() - t0, summary_of(job.run_dir), pruned=pruned)


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() != ""]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover - torch always importable here
        return []


def slurm_placement(job: Job, cfg: LauncherConfig) -> dict[str, int]:
    """submitit's ``nodes`` / ``tasks_per_node`` / ``gpus_per_node`` for ``job``: one task per training device, as
    Lightning's SLURM environment requires (it refuses to start when trainer.devices != tasks per node)."""
    devices, num_nodes = job.devices, job.nodes
    tasks = cfg.slurm_tasks_per_node or devices or cfg.slurm_gpus_per_node or 1
    if devices is not None and tasks != devices:
        raise ConfigError(
            f"launcher.slurm_tasks_per_node={tasks} but job {job.name} trains on trainer.devices="
            f"{devices}: Lightning needs one SLURM task per device; set them equal (or leave "
            "launcher.slurm_tasks_per_node unset)"
        )
    nodes = cfg.slurm_nodes or num_nodes
    if nodes != num_nodes:
        raise ConfigError(
            f"launcher.slurm_nodes={nodes} but job {job.name} has trainer.num_nodes={num_nodes}: set "
            "them equal (or leave launcher.slurm_nodes unset)"
        )
    gpus = tasks if cfg.slurm_gpus_per_node is None else cfg.slurm_gpus_per_node
    return {"nodes": nodes, "tasks_per_node": tasks, "gpus_per_node": gpus}


class _SlurmTask:
    """A picklable, checkpointable submitit task: on preemption/timeout it is requeued with the same arguments; the
    job's pinned run directory makes the rerun resume from ``last.ckpt``."""

    def __init__(self, job: Job):
        self.job = job

    def __call__(self) -> JobResult:
        return _run_local(self.job)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(_SlurmTask(self.job))


def launch(jobs: Sequence[Job], cfg: LauncherConfig | None = None, *, progress: bool = True) -> list[JobResult]:
    """Run every job with the configured launcher; returns results in job order."""
    cfg = cfg or LauncherConfig()
    if cfg.name not in LAUNCHERS:
        raise ConfigError(f"launcher={cfg.name!r} is unknown; use one of {', '.join(LAUNCHERS)}")
    if not jobs:
        return []
    if cfg.name == "local":
        out = []
        for i, job in enumerate(jobs):
            if progress:
                print(f"[{i + 1}/{len(jobs)}] {job.name}: autolabel {' '.join(job.argv())}")
            out.append(_run_local(job))
        return out
    if cfg.name == "local_gpus":
        gpus = _visible_gpus()
        if cfg.gpus > 0:
            gpus = gpus[: cfg.gpus]
        if not gpus:
            raise ConfigError("launcher=local_gpus found no GPU (CUDA_VISIBLE_DEVICES empty); use launcher=local")
        free: list[str] = list(gpus)
        import threading

        lock = threading.Lock()

        def work(job: Job) -> JobResult:
            with lock:
                gpu = free.pop(0)
            try:
                if progress:
                    print(f"[gpu {gpu}] {job.name}")
                return _run_local(job, env={"CUDA_VISIBLE_DEVICES": gpu})
            finally:
                with lock:
                    free.append(gpu)

        with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
            return list(pool.map(work, jobs))
    # slurm / submitit_local
    import submitit

    folder = Path(cfg.folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, list[int]] = {}  # one job array per placement (submitit arrays share their parameters)
    for i, job in enumerate(jobs):
        placement = {} if cfg.name == "submitit_local" else slurm_placement(job, cfg)  # local: one task, no SLURM env
        groups.setdefault(tuple(sorted(placement.items())), []).append(i)
    handles: list[Any] = [None] * len(jobs)
    for key, idx in groups.items():
        if cfg.name == "submitit_local":
            executor: Any = submitit.LocalExecutor(folder=str(folder))
            executor.update_parameters(timeout_min=cfg.slurm_time_min)
        else:
            executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
            params: dict[str, Any] = dict(
                timeout_min=cfg.slurm_time_min,
                cpus_per_task=cfg.slurm_cpus_per_task,
                mem_gb=cfg.slurm_mem_gb,
                slurm_signal_delay_s=cfg.slurm_signal_delay_s,
                slurm_array_parallelism=cfg.slurm_array_parallelism,
                slurm_additional_parameters=dict(cfg.slurm_additional),
                **dict(key),
            )
            if cfg.slurm_partition:
                params["slurm_partition"] = cfg.slurm_partition
            executor.update_parameters(**params)
        with executor.batch():  # one job array
            subs = [executor.submit(_SlurmTask(jobs[i])) for i in idx]
        for i, h in zip(idx, subs):
            handles[i] = h
    if progress:
        print(f"submitted {len(handles)} job(s): {', '.join(str(h.job_id) for h in handles)}")
    results = []
    for job, h in zip(jobs, handles):
        try:
            results.append(h.result())
        except Exception as e:  # a failed job is a row in the table, not a crash of the sweep
            print(f"job {job.name} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            results.append(JobResult(job.name, job.run_dir, 1, 0.0, summary_of(job.run_dir)))
    return results
