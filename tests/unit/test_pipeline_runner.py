"""The stage DAG runner: skip finished stages, rerun changed ones and their dependents, force with from_stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from autolabel.engine.io import read_json
from autolabel.engine.rundir import RunDir
from autolabel.errors import ConfigError
from pipelines.runner import Pipeline, Stage, run_pipeline


@dataclass
class _A:
    n: int = 3


@dataclass
class _B:
    scale: float = 2.0


@dataclass
class _Cfg:
    a: _A = field(default_factory=_A)
    b: _B = field(default_factory=_B)


def _pipeline(calls: list[str], fail_in: str | None = None) -> Pipeline:
    def make(ctx):
        calls.append("make")
        p = ctx.dir / "numbers.txt"
        p.write_text(",".join(str(i) for i in range(ctx.cfg.a.n)))
        return {"outputs": {"numbers": p}, "metrics": {"count": ctx.cfg.a.n}}

    def scale(ctx):
        calls.append("scale")
        if fail_in == "scale":
            raise RuntimeError("boom")
        nums = [int(x) for x in ctx.input_path("make", "numbers").read_text().split(",")]
        p = ctx.dir / "scaled.txt"
        total = sum(nums) * ctx.cfg.b.scale
        p.write_text(str(total))
        return {"outputs": {"scaled": p}, "metrics": {"total": total}}

    return Pipeline(
        "toy",
        [
            Stage("make", make, config_keys=["a"]),
            Stage("scale", scale, needs=["make"], config_keys=["b"]),
        ],
    )


def test_runs_then_skips_then_reruns_changed(tmp_path):
    run = RunDir(tmp_path)
    calls: list[str] = []
    res = run_pipeline(_pipeline(calls), _Cfg(), run, log=lambda s: None)
    assert [r.status for r in res] == ["ran", "ran"] and calls == ["make", "scale"]
    assert read_json(tmp_path / "scale" / "manifest.json")["metrics"]["total"] == 6.0
    calls.clear()
    res = run_pipeline(_pipeline(calls), _Cfg(), run, log=lambda s: None)
    assert [r.status for r in res] == ["skipped", "skipped"] and calls == []
    # a change in b reruns only scale; a change in a reruns both (scale depends on make's hash)
    res = run_pipeline(_pipeline(calls), _Cfg(b=_B(scale=3.0)), run, log=lambda s: None)
    assert [r.status for r in res] == ["skipped", "ran"]
    calls.clear()
    res = run_pipeline(_pipeline(calls), _Cfg(a=_A(n=4), b=_B(scale=3.0)), run, log=lambda s: None)
    assert calls == ["make", "scale"]
    assert read_json(tmp_path / "scale" / "manifest.json")["metrics"]["total"] == 18.0


def test_missing_output_and_from_stage_force_rerun(tmp_path):
    run = RunDir(tmp_path)
    calls: list[str] = []
    run_pipeline(_pipeline(calls), _Cfg(), run, log=lambda s: None)
    (tmp_path / "scale" / "scaled.txt").unlink()
    calls.clear()
    run_pipeline(_pipeline(calls), _Cfg(), run, log=lambda s: None)
    assert calls == ["scale"]
    calls.clear()
    run_pipeline(_pipeline(calls), _Cfg(), run, from_stage="make", log=lambda s: None)
    assert calls == ["make", "scale"]
    with pytest.raises(ConfigError, match="has no stage 'nope'.*make, scale"):
        run_pipeline(_pipeline(calls), _Cfg(), run, from_stage="nope", log=lambda s: None)


def test_crash_leaves_stage_unfinished_and_rerun_completes(tmp_path):
    run = RunDir(tmp_path)
    calls: list[str] = []
    with pytest.raises(RuntimeError):
        run_pipeline(_pipeline(calls, fail_in="scale"), _Cfg(), run, log=lambda s: None)
    assert not (tmp_path / "scale" / "manifest.json").exists()
    calls.clear()
    res = run_pipeline(_pipeline(calls), _Cfg(), run, log=lambda s: None)
    assert calls == ["scale"] and [r.status for r in res] == ["skipped", "ran"]


def test_until_stage_stops_early(tmp_path):
    calls: list[str] = []
    res = run_pipeline(_pipeline(calls), _Cfg(), RunDir(tmp_path), until_stage="make", log=lambda s: None)
    assert [r.name for r in res] == ["make"] and calls == ["make"]


def test_bad_dag_is_refused():
    with pytest.raises(ValueError, match="needs"):
        Pipeline("bad", [Stage("b", lambda c: {}, needs=["a"]), Stage("a", lambda c: {})])


def test_checkpoints_survive_only_an_interruption_of_the_same_config(tmp_path):
    """An interrupted stage keeps its checkpoints (and resumes); a changed config or a forced rerun starts clean."""
    run = RunDir(tmp_path)
    seen: list[bool] = []

    def train(ctx):
        ckpt = ctx.dir / "checkpoints" / "last.ckpt"
        seen.append(ckpt.exists())
        if len(seen) == 1:  # the first attempt "crashes" after checkpointing
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.write_text("state")
            raise RuntimeError("killed")
        return {"metrics": {"n": ctx.cfg.a.n}}

    pipe = Pipeline("p", [Stage("train", train, config_keys=["a"])])
    with pytest.raises(RuntimeError):
        run_pipeline(pipe, _Cfg(), run, log=lambda s: None)
    run_pipeline(pipe, _Cfg(), run, log=lambda s: None)  # same config: resumes from the checkpoint
    run_pipeline(pipe, _Cfg(), run, from_stage="train", log=lambda s: None)  # forced: fresh
    assert seen == [False, True, False]
    (tmp_path / "train" / "checkpoints").mkdir(exist_ok=True)
    (tmp_path / "train" / "checkpoints" / "last.ckpt").write_text("from n=3")
    run_pipeline(pipe, _Cfg(a=_A(n=4)), run, log=lambda s: None)  # another config: the old checkpoint is not its own
    assert seen[-1] is False
