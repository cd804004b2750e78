"""Sweeps expand into jobs; launchers run them and collect each run's summary.json."""

from __future__ import annotations

import json
import sys

import pytest

from autolabel.errors import ConfigError
from pipelines.launchers import Job, LauncherConfig, launch
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


def test_preempted_slurm_task_is_requeued_with_the_same_pinned_run_dir(tmp_path):
    """On preemption/timeout submitit calls ``checkpoint``: the resubmission is the same job (same pinned run.dir), so
    the rerun's stages find their ``last.ckpt`` and resume."""
    from pipelines.launchers import _SlurmTask

    job = Job("007", ["fit", "hilander", "train_features=x.npz"], tmp_path / "007")
    resubmission = _SlurmTask(job).checkpoint()
    task = resubmission.function
    assert isinstance(task, _SlurmTask) and task.job == job
    assert task.job.argv()[-1] == f"run.dir={tmp_path / '007'}"
