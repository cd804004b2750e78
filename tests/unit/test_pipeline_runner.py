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


def test_a_stage_that_does_not_resume_starts_from_an_empty_folder(tmp_path):
    """Whatever a stage left in its folder (sub-run checkpoints, a half-made dataset) survives only an interruption of
    the same config: a forced rerun or a changed config would otherwise resume finished sub-runs or reuse old files."""
    run = RunDir(tmp_path)
    seen: list[list[str]] = []

    def train(ctx):
        seen.append(sorted(p.relative_to(ctx.dir).as_posix() for p in ctx.dir.rglob("*") if p.is_file()))
        for rel in ("synthetic/checkpoints/last.ckpt", "dataset/images/0.png"):
            (ctx.dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (ctx.dir / rel).write_text(str(ctx.cfg.a.n))
        if len(seen) == 1:
            raise RuntimeError("killed")
        return {"metrics": {"n": ctx.cfg.a.n}}

    pipe = Pipeline("p", [Stage("train", train, config_keys=["a"])])
    leftovers = ["dataset/images/0.png", "running.json", "synthetic/checkpoints/last.ckpt"]
    with pytest.raises(RuntimeError):
        run_pipeline(pipe, _Cfg(), run, log=lambda s: None)
    run_pipeline(pipe, _Cfg(), run, log=lambda s: None)  # resumes: everything is still there
    run_pipeline(pipe, _Cfg(), run, from_stage="train", log=lambda s: None)  # forced: empty but for the marker
    run_pipeline(pipe, _Cfg(a=_A(n=5)), run, log=lambda s: None)  # another config: empty too
    assert seen == [["running.json"], leftovers, ["running.json"], ["running.json"]]


def test_an_interrupted_forced_rerun_does_not_leave_stale_finished_stages(tmp_path):
    """from_stage=make forces make and scale; killed in make, a plain rerun must not skip scale as 'done'."""
    run = RunDir(tmp_path)
    calls: list[str] = []
    run_pipeline(_pipeline(calls), _Cfg(), run, log=lambda s: None)

    def broken_make(ctx):
        raise RuntimeError("killed in make")

    pipe = _pipeline(calls)
    pipe.stages[0].fn = broken_make
    with pytest.raises(RuntimeError):
        run_pipeline(pipe, _Cfg(), run, from_stage="make", log=lambda s: None)
    calls.clear()
    res = run_pipeline(_pipeline(calls), _Cfg(), run, log=lambda s: None)
    assert calls == ["make", "scale"] and [r.status for r in res] == ["ran", "ran"]


def _ranked_pipeline(rank: int, root, trace: list[str], arrived: dict) -> Pipeline:
    import threading
    import time

    def prep(ctx):
        trace.append(f"{rank}:prep")
        time.sleep(0.5)  # the other rank has to wait for this
        p = ctx.dir / "data.txt"
        p.write_text("x" * ctx.cfg.a.n)
        return {"outputs": {"data": p}}

    def train(ctx):  # a DDP stage: neither rank finishes before both started it (like a collective)
        trace.append(f"{rank}:train")
        arrived.setdefault("event", threading.Barrier(2)).wait(timeout=30)
        (ctx.dir / f"seen{rank}.txt").write_text(ctx.input_path("prep", "data").read_text())
        return {"outputs": {}}

    def post(ctx):
        trace.append(f"{rank}:post")
        raise RuntimeError("disk full")

    return Pipeline("p", [Stage("prep", prep, config_keys=["a"]),
                          Stage("train", train, needs=["prep"], distributed=True),
                          Stage("post", post, needs=["train"])])  # fmt: skip


def test_ranks_run_training_stages_together_and_the_rest_on_rank_0_only(tmp_path, monkeypatch):
    """Two ranks of one torchrun launch (same TORCHELASTIC_RUN_ID): rank 1 runs only the distributed stage, takes the
    other stages' outputs from rank 0's manifests, and stops with a clear error when rank 0 fails."""
    import threading

    from pipelines.runner import RankSyncError

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test-launch")
    run, trace, arrived, errors, said = RunDir(tmp_path), [], {"event": threading.Barrier(2)}, {}, []

    def rank_main(rank: int) -> None:
        try:
            run_pipeline(_ranked_pipeline(rank, tmp_path, trace, arrived), _Cfg(), run, rank=rank, log=said.append)
        except Exception as e:
            errors[rank] = e

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in (1, 0)]  # the follower starts first
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(trace) == ["0:post", "0:prep", "0:train", "1:train"]
    assert trace.index("0:prep") < trace.index("1:train")
    assert (tmp_path / "train" / "seen1.txt").read_text() == "xxx"  # rank 1 read rank 0's prep output
    assert isinstance(errors[0], RuntimeError) and "disk full" in str(errors[0])
    assert isinstance(errors[1], RankSyncError) and "rank 0 failed in stage 'post'" in str(errors[1])
    assert "[prep] rank 1: runs on rank 0, waiting for its manifest" in said


def test_downstream_check_is_skipped_without_a_test_folder(tmp_path):
    from pipelines.definitions import PipelineConfig
    from pipelines.runner import StageContext
    from pipelines.stages.downstream import stage_downstream

    ctx = StageContext(PipelineConfig(), RunDir(tmp_path), tmp_path, {"data": {"outputs": {"labeled": "x"}}})
    out = stage_downstream(ctx)
    assert "data.test" in out["metrics"]["skipped"] and "outputs" not in out
