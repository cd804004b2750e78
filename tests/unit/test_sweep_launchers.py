"""Sweeps expand into jobs; launchers run them and collect each run's summary.json."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from autolabel.errors import ConfigError
from pipelines.launchers import Job, JobResult, LauncherConfig, launch
from pipelines.sweep import _fmt_value, _lookup, expand_grid, results_table


def test_expand_grid_cartesian_in_order():
    g = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(g) == 6 and g[0] == {"a": 1, "b": "x"} and g[-1] == {"a": 2, "b": "z"}
    assert expand_grid({}) == [{}]
    with pytest.raises(ConfigError, match="non-empty list"):
        expand_grid({"a": []})


def test_value_formatting_and_lookup():
    assert _fmt_value([1, [2, 3]]) == "[1,[2,3]]"
    assert _lookup({"a": {"b": 0.5}}, "a.b") == 0.5 and _lookup({"a": 1}, "a.c") is None


def test_launch_local_collects_summary_and_failures(tmp_path):
    # `autolabel report` on a run with a manifest succeeds; on a missing dir it fails with exit 2
    good = tmp_path / "good"
    (good / "s").mkdir(parents=True)
    (good / "s" / "manifest.json").write_text(json.dumps({"status": "done", "seconds": 1, "finished": "t"}))
    (good / "summary.json").write_text(json.dumps({"f": 0.9}))
    jobs = [
        Job("000", ["report", str(good)], good, pin_run_dir=False),
        Job("001", ["report", str(tmp_path / "missing")], tmp_path / "j1", pin_run_dir=False),
    ]
    res = launch(jobs, LauncherConfig(name="local"), progress=False)
    assert [r.returncode for r in res] == [0, 2]
    assert res[0].summary == {"f": 0.9}
    assert (tmp_path / "j1" / "job.log").read_text().startswith("error:")
    header, table = results_table([({"p": 1}, res[0]), ({"p": 2}, res[1])], ["f"])
    assert header == ["job", "p", "f", "status", "returncode", "seconds"]
    assert table[0][:5] == ["000", 1, 0.9, "done", 0] and table[1][2] is None and table[1][3] == "failed"


def test_unknown_launcher_and_no_gpu(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="launcher='nope'"):
        launch([Job("a", [], tmp_path)], LauncherConfig(name="nope"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="no GPU"):
        launch([Job("a", [], tmp_path)], LauncherConfig(name="local_gpus"))


@pytest.mark.skipif(sys.platform != "linux", reason="submitit's local executor needs POSIX")
def test_submitit_local_executor_runs_job_array(tmp_path):
    good = tmp_path / "good"
    (good / "s").mkdir(parents=True)
    (good / "s" / "manifest.json").write_text(json.dumps({"status": "done", "seconds": 1, "finished": "t"}))
    (good / "summary.json").write_text(json.dumps({"f": 0.5}))
    cfg = LauncherConfig(name="submitit_local", folder=str(tmp_path / "submitit"), slurm_time_min=5)
    res = launch([Job("000", ["report", str(good)], good, pin_run_dir=False)], cfg, progress=False)
    assert res[0].returncode == 0 and res[0].summary == {"f": 0.5}
    assert (good / "report" / "report.html").is_file()


def _controller_task_pid(folder, timeout: float = 60.0) -> int:
    """The pid of submitit's task process (``python -m submitit.core._submit FOLDER``) for this test's folder."""
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"submitit.core._submit" in cmd and str(folder).encode() in cmd:
                return int(proc.name)
        time.sleep(0.1)
    raise AssertionError(f"no submitit task process for {folder}")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="submitit's local executor needs POSIX")
def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A real `fit hilander` job through submitit's LocalExecutor: preempted (SIGUSR2, what SLURM sends before it
    preempts or times out) once its last.ckpt exists, it is checkpointed and requeued by submitit, the rerun resumes
    from last.ckpt in the same pinned run directory, and its final weights equal an uninterrupted run's."""
    import signal
    import threading

    import numpy as np
    import torch

    from autolabel.data.synthetic import make_blob_features
    from pipelines.cli import main

    # the job's processes must reduce floats like this one (the reference run below): same intra-op thread count
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    x, y = make_blob_features(6, 20, 16, spread=0.1, seed=0)
    np.savez(tmp_path / "train.npz", features=x, labels=y)
    args = ["fit", "hilander", f"train_features={tmp_path / 'train.npz'}", "model.hidden=16", "train.k_list=[5,3]",
            "train.levels_list=[2,2]", "trainer.max_epochs=40", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false"]  # fmt: skip
    job = Job("000", args, tmp_path / "job")
    cfg = LauncherConfig(name="submitit_local", folder=str(tmp_path / "submitit"), slurm_time_min=10)
    out: dict = {}
    runner = threading.Thread(target=lambda: out.setdefault("res", launch([job], cfg, progress=False)))
    runner.start()
    ckpt = job.run_dir / "hilander" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not ckpt.is_file():
        assert time.monotonic() < deadline and runner.is_alive(), "the job never checkpointed"
        time.sleep(0.05)
    os.kill(_controller_task_pid(tmp_path / "submitit"), signal.SIGUSR2)  # preemption notice
    preempted_at = torch.load(ckpt, weights_only=False)["epoch"]
    runner.join(timeout=300)
    (res,) = out["res"]
    assert res.returncode == 0 and res.summary, (job.run_dir / "job.log").read_text()[-3000:]
    log = (job.run_dir / "job.log").read_text()
    assert preempted_at < 39 and f"resuming from {ckpt}" in log  # the rerun resumed
    assert any("Requeued" in p.read_text() for p in (tmp_path / "submitit").glob("*_log.*"))

    assert main([*args, f"run.dir={tmp_path / 'reference'}"]) == 0  # the same job, never interrupted
    a = torch.load(ckpt, weights_only=False)
    b = torch.load(tmp_path / "reference" / "hilander" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])


def _fake_local_run(monkeypatch, hold: float = 0.05, barrier=None):
    """Replace the subprocess a local job runs with a recorder of the GPU it was given and when it ran."""
    import threading

    from pipelines import launchers

    lock, running, seen = threading.Lock(), {}, []

    def fake(job, env=None):
        gpu = (env or {}).get("CUDA_VISIBLE_DEVICES")
        with lock:
            assert gpu not in running.values(), f"GPU {gpu} given to two running jobs"
            running[job.name] = gpu
            seen.append((job.name, gpu, len(running)))
        if barrier is not None:
            barrier.wait(timeout=10)
        time.sleep(hold)
        with lock:
            del running[job.name]
        return JobResult(job.name, job.run_dir, 0, hold)

    monkeypatch.setattr(launchers, "_run_local", fake)
    return seen


def test_local_gpus_runs_one_job_per_gpu_at_a_time(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    seen = _fake_local_run(monkeypatch, barrier=threading.Barrier(3))
    jobs = [Job(f"{i:03d}", ["report", "x"], tmp_path / str(i)) for i in range(3)]
    res = launch(jobs, LauncherConfig(name="local_gpus"), progress=False)
    assert [r.name for r in res] == ["000", "001", "002"]
    assert sorted(g for _, g, _ in seen) == ["3", "5", "7"]  # all three ran at once, each on its own GPU

    seen = _fake_local_run(monkeypatch)
    jobs = [Job(f"{i:03d}", ["report", "x"], tmp_path / str(i)) for i in range(7)]
    res = launch(jobs, LauncherConfig(name="local_gpus", gpus=2), progress=False)  # only the first two GPUs
    assert [r.name for r in res] == [j.name for j in jobs] and all(r.returncode == 0 for r in res)
    assert {g for _, g, _ in seen} == {"3", "5"} and max(n for _, _, n in seen) <= 2


def test_local_gpus_counts_devices_without_cuda_visible_devices(tmp_path, monkeypatch):
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    seen = _fake_local_run(monkeypatch)
    launch([Job(f"{i}", [], tmp_path / str(i)) for i in range(4)], LauncherConfig(name="local_gpus"), progress=False)
    assert {g for _, g, _ in seen} == {"0", "1"}


def test_slurm_jobs_get_one_task_per_training_device(tmp_path, monkeypatch):
    """Lightning's SLURM environment refuses to start unless tasks per node == trainer.devices: the launcher asks for
    that many tasks (and GPUs), per job, read from the job's own resolved config."""
    import contextlib

    import submitit

    from autolabel.config import configs_dir

    executors: list = []

    class FakeExecutor:
        def __init__(self, folder, cluster):
            self.params, self.tasks = {}, []
            executors.append(self)

        def update_parameters(self, **kw):
            self.params.update(kw)

        @contextlib.contextmanager
        def batch(self):
            yield

        def submit(self, task):
            self.tasks.append(task)
            handle = type("Handle", (), {"job_id": str(len(self.tasks))})()
            handle.result = lambda: JobResult(task.job.name, task.job.run_dir, 0, 0.0)
            return handle

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    from pipelines.cli import commands
    from pipelines.commands.base import job_trainer

    def resolved(name, args, run_dir, **kw):  # as the sweep builds its jobs: devices/nodes from the resolved config
        devices, nodes = job_trainer(args, commands())
        return Job(name, args, run_dir, devices=devices, nodes=nodes, **kw)

    fit = ["fit", "hilander", "train_features=x.npz"]
    jobs = [
        resolved("a", [*fit, "trainer.devices=4"], tmp_path / "a"),
        resolved(
            "b", [*fit, f"config={configs_dir() / 'trainer' / 'gpu8_ddp.yaml'}", "trainer.num_nodes=2"], tmp_path / "b"
        ),
        resolved("c", [*fit, "trainer.devices=[0,1,2,3]"], tmp_path / "c"),
        resolved("d", ["report", str(tmp_path)], tmp_path / "d", pin_run_dir=False),
    ]
    cfg = LauncherConfig(name="slurm", slurm_partition="gpu", folder=str(tmp_path / "s"))
    res = launch(jobs, cfg, progress=False)
    assert [r.name for r in res] == ["a", "b", "c", "d"]
    placed = {tuple(t.job.name for t in e.tasks): e.params for e in executors}
    assert {k: (p["nodes"], p["tasks_per_node"], p["gpus_per_node"]) for k, p in placed.items()} == {
        ("a", "c"): (1, 4, 4), ("b",): (2, 8, 8), ("d",): (1, 1, 1)}  # fmt: skip
    assert all(p["slurm_partition"] == "gpu" and p["timeout_min"] == 240 for p in placed.values())
    with pytest.raises(ConfigError, match="slurm_tasks_per_node=2 but job a trains on trainer.devices=4"):
        launch(jobs[:1], LauncherConfig(name="slurm", slurm_tasks_per_node=2, folder=str(tmp_path / "s")))
    with pytest.raises(ConfigError, match="slurm_nodes=3 but job b has trainer.num_nodes=2"):
        launch(jobs[1:2], LauncherConfig(name="slurm", slurm_nodes=3, folder=str(tmp_path / "s")))


def _optuna_with_fake_trials(tmp_path, monkeypatch, n_trials: int, behaviour: dict) -> list[dict]:
    """Run `autolabel sweep` with an Optuna study whose trials are simulated: each writes the metrics.csv of a
    pipeline-like run (two stages, each with its own steps) and stops when the pruner says so."""
    import csv

    from pipelines import sweep
    from pipelines.launchers import summary_of
    from pipelines.sweep import run_sweep

    def fake_monitored(job, should_stop, interval_s=2.0):
        lr = float(next(a for a in job.args if a.startswith("train.lr=")).split("=")[1])
        rc, curve = behaviour[lr]
        other = job.run_dir / "classifier" / "logs" / "metrics.csv"  # another stage, logging the same column
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_text("epoch,step,train/loss_step\n0,0,9.0\n0,1,9.0\n0,2,9.0\n0,3,9.0\n")
        log = job.run_dir / "hilander" / "logs" / "metrics.csv"
        log.parent.mkdir(parents=True, exist_ok=True)
        rows = ["epoch,step,train/loss_step"]
        for step, value in enumerate(curve):
            rows.append(f"0,{step},{value}")
            log.write_text("\n".join(rows) + "\n")
            if should_stop():
                return JobResult(job.name, job.run_dir, -15, 0.1, {}, pruned=True)
        if rc == 0:
            (job.run_dir / "summary.json").write_text(json.dumps({"train/loss_epoch": curve[-1]}))
        return JobResult(job.name, job.run_dir, rc, 0.1, summary_of(job.run_dir))

    monkeypatch.setattr(sweep, "run_local_monitored", fake_monitored)
    (tmp_path / "sweep.yaml").write_text(f"""
name: study
root: {tmp_path / "sweeps"}
command: run
metrics: [train/loss_epoch]
optuna:
  n_trials: {n_trials}
  direction: minimize
  metric: train/loss_epoch
  params: {{train.lr: {{choices: [0.1, 0.001, 0.5, 0.2]}}}}
  enqueue: [{{train.lr: 0.1}}, {{train.lr: 0.001}}, {{train.lr: 0.5}}]
  prune_metric: train/loss_step
  prune_stage: hilander
  pruner: median
  prune_startup_trials: 1
  storage: sqlite:///{tmp_path / "study.db"}
""")
    path = run_sweep(tmp_path / "sweep.yaml")
    return list(csv.DictReader(path.open()))


def test_optuna_median_pruner_failed_trials_and_a_resumed_study(tmp_path, monkeypatch):
    import optuna

    behaviour = {0.1: (0, [1.0, 0.5, 0.25, 0.1]),  # finishes: the median curve
                 0.001: (0, [1.0, 0.9, 0.9, 0.9]),  # trails the median at step 1: pruned
                 0.5: (1, [1.0, 0.4]),  # a good curve, then the job crashes: failed, not pruned
                 0.2: (0, [1.0, 0.45, 0.2, 0.05])}  # fmt: skip
    rows = _optuna_with_fake_trials(tmp_path, monkeypatch, 3, behaviour)
    assert [(r["train.lr"], r["status"]) for r in rows] == [("0.1", "done"), ("0.001", "pruned"), ("0.5", "failed")]
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path / 'study.db'}")
    states = optuna.trial.TrialState
    assert [t.state for t in study.trials] == [states.COMPLETE, states.PRUNED, states.FAIL]
    assert study.trials[1].intermediate_values == {0: 1.0, 1: 0.9}  # the hilander stage's curve, not the classifier's

    # the sweep is killed during a 4th trial; rerunning it keeps the 3 finished ones and retries that one in place
    study.enqueue_trial({"train.lr": 0.2})
    trial = study.ask({"train.lr": optuna.distributions.CategoricalDistribution([0.1, 0.001, 0.5, 0.2])})
    trial.set_user_attr("job", "003")
    trial.set_user_attr("run_dir", str(tmp_path / "sweeps" / "study" / "003"))
    rows = _optuna_with_fake_trials(tmp_path, monkeypatch, 4, behaviour)
    assert [(r["job"], r["train.lr"], r["status"]) for r in rows] == [
        ("000", "0.1", "done"), ("001", "0.001", "pruned"), ("002", "0.5", "failed"), ("003", "0.2", "done")]  # fmt: skip
    assert float(rows[3]["train/loss_epoch"]) == 0.05
