"""A pipeline is a DAG of stages; each stage writes its artifacts plus a ``manifest.json`` into its own folder.

Rerunning a pipeline skips every stage whose manifest says it finished with the same *stage hash* (its own config
sections plus the hashes of the stages it reads) and whose declared outputs still exist; an interrupted stage runs
again and its training resumes from ``<stage>/checkpoints/last.ckpt`` (its folder is kept as it is). A stage that runs
for any other reason -- ``from_stage=NAME`` forces NAME and everything downstream of it, or its stage hash changed --
starts from an empty folder, so nothing of an earlier run (sub-run checkpoints, half-written datasets) is reused.

Several processes (DDP ranks started by torchrun, SLURM or Lightning) may run the same pipeline: stages marked
``distributed`` (Lightning training) run on every rank; every other stage runs on global rank 0 only while the other
ranks wait for its manifest (a file barrier in the stage folder, tagged with a token all ranks of one launch share).
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autolabel.config import config_hash
from autolabel.engine.dist import global_rank, launcher_token
from autolabel.engine.io import read_json, write_json
from autolabel.engine.rundir import RunDir
from autolabel.errors import AutolabelError, ConfigError

MANIFEST = "manifest.json"
RUNNING = "running.json"  # marks a started stage: its config hash, so an interruption resumes only the same run
ATTEMPT_ENV = "AUTOLABEL_ATTEMPT"  # the token rank 0 exports for the ranks Lightning launches from it
WAIT_ENV = "AUTOLABEL_RANK_TIMEOUT_S"  # how long a non-zero rank waits for rank 0's stage (default: a day)


class RankSyncError(AutolabelError):
    """A non-zero rank gave up waiting for rank 0 (rank 0 failed, died or took longer than the timeout)."""


@dataclass
class StageContext:
    """What a stage function sees: the whole config, its folder, and the manifests of the stages it needs."""

    cfg: Any  # the pipeline's config object (dataclass instance)
    run: RunDir
    dir: Path
    inputs: dict[str, dict]  # stage name -> that stage's manifest

    def input_path(self, stage: str, key: str) -> Path:
        try:
            return Path(self.inputs[stage]["outputs"][key])
        except KeyError as e:
            raise ConfigError(f"stage '{self.dir.name}' needs output '{key}' of stage '{stage}', which it lacks") from e


@dataclass
class Stage:
    name: str
    fn: Callable[[StageContext], dict]  # returns {"outputs": {key: path}, "metrics": {...}, ...}
    needs: Sequence[str] = ()
    config_keys: Sequence[str] = ()  # dotted config sections this stage depends on
    description: str = ""
    # True: a Lightning training stage, run by every DDP rank together; False: rank 0 runs it, the others wait
    distributed: bool = False


@dataclass
class Pipeline:
    name: str
    stages: list[Stage]
    description: str = ""
    # checks the config against what this pipeline needs (data folders exist...) before any work; raises ConfigError
    validate: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        seen: set[str] = set()
        for s in self.stages:
            missing = [n for n in s.needs if n not in seen]
            if missing:
                raise ValueError(f"pipeline {self.name}: stage {s.name} needs {missing}, which do not run before it")
            seen.add(s.name)
        if len(set(names)) != len(names):
            raise ValueError(f"pipeline {self.name}: duplicate stage names {names}")

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"pipeline {self.name} has no stage '{name}'; its stages: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def downstream(self, name: str) -> set[str]:
        out = {name}
        for s in self.stages:
            if any(n in out for n in s.needs):
                out.add(s.name)
        return out


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "skipped"
    seconds: float
    manifest: dict = field(default_factory=dict)


def _section(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def stage_hash(cfg: DictConfig, stage: Stage, upstream: dict[str, str]) -> str:
    payload = {"stage": stage.name, "config": {k: _section(cfg, k) for k in stage.config_keys}}
    payload["upstream"] = {n: upstream[n] for n in stage.needs}
    return config_hash(payload)


def _outputs_intact(manifest: dict) -> bool:
    return all(Path(p).exists() for p in manifest.get("outputs", {}).values())


def _clear_dir(sdir: Path, keep: Sequence[str] = ()) -> None:
    import shutil

    if not sdir.is_dir():
        return
    for child in sdir.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _prepare_stage_dir(sdir: Path, stage_hash: str, *, fresh: bool = False, attempt: str = "") -> bool:
    """Mark ``sdir`` as running ``stage_hash``; True when it resumes an interrupted run of the same stage hash.

    Only an interrupted run with the same hash is resumed, and then the folder is kept as it is (``last.ckpt``,
    partial synthesis shards...). Otherwise -- a finished run, another config, or ``fresh`` (a forced rerun) -- the
    folder is emptied first: checkpoints of sub-runs, old datasets or logs would otherwise be picked up as if they were
    this run's (a forced downstream check resuming finished sub-runs trains nothing). Call on rank 0 only.
    """
    marker = sdir / RUNNING
    try:
        prev = read_json(marker) if marker.is_file() else {}
    except (OSError, ValueError):
        prev = {}
    resuming = not fresh and prev.get("stage_hash") == stage_hash  # also after a crash (failed: rank-sync only)
    resuming = resuming and not (sdir / MANIFEST).is_file()
    if not resuming:
        _clear_dir(sdir, keep=(RUNNING,))
    write_json(marker, {"stage_hash": stage_hash, "attempt": attempt})
    return resuming


# ------------------------------------------------------------------------------------------------ rank sync


def attempt_token(rank: int | None = None) -> str:
    """The token that tags this launch's stage markers and manifests. Rank 0 exports it, so ranks that Lightning's
    DDP launcher starts from rank 0 inherit it; ranks started by torchrun or SLURM derive it from their launcher."""
    rank = global_rank() if rank is None else rank
    launcher = launcher_token()
    if rank == 0:
        token = launcher or uuid.uuid4().hex
        os.environ[ATTEMPT_ENV] = token
        return token
    return launcher or os.environ.get(ATTEMPT_ENV, "")


def _await_file(path: Path, want: dict[str, Any], failed: Path, attempt: str, what: str, rank: int) -> dict:
    """Poll ``path`` until its JSON holds every key/value of ``want``; raise when rank 0 marked ``failed`` for this
    attempt, when the parent rank that launched this process died, or after ``$AUTOLABEL_RANK_TIMEOUT_S`` seconds."""
    timeout = float(os.environ.get(WAIT_ENV, 24 * 3600))
    deadline = time.monotonic() + timeout
    parent = os.getppid()
    inherited = launcher_token() is None  # started by rank 0 itself (Lightning's launcher): it is our parent
    delay = 0.05
    while True:
        for p, check in ((path, True), (failed, False)):
            if not p.is_file():
                continue
            try:
                info = read_json(p)
            except (OSError, ValueError):  # being replaced right now: read it next round
                continue
            if check and not info.get("failed") and all(info.get(k) == v for k, v in want.items()):
                return info
            if not check and info.get("failed") and info.get("attempt") == attempt:
                raise RankSyncError(
                    f"rank {rank}: rank 0 failed in {what} ({info.get('error', '?')}); "
                    "fix that error and rerun the same command on every rank"
                )
        if inherited and os.getppid() != parent:
            raise RankSyncError(
                f"rank {rank}: rank 0 exited while this rank waited for {what}; rerun the same command to resume"
            )
        if time.monotonic() > deadline:
            raise RankSyncError(
                f"rank {rank} waited {timeout:.0f}s for rank 0 to finish {what}; raise "
                f"${WAIT_ENV} or check rank 0's log"
            )
        time.sleep(delay)
        delay = min(1.0, delay * 1.5)


def _mark_failed(sdir: Path, stage_hash: str, attempt: str, error: BaseException) -> None:
    try:
        write_json(
            sdir / RUNNING,
            {
                "stage_hash": stage_hash,
                "attempt": attempt,
                "failed": True,
                "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
            },
        )
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------ validation


def _check(node: Any) -> None:
    """Re-run the checks (``__post_init__``) of the config dataclass ``node`` and of every dataclass inside it."""
    if not dataclasses.is_dataclass(node) or isinstance(node, type):
        return
    for f in dataclasses.fields(node):
        _check(getattr(node, f.name))
    post = getattr(node, "__post_init__", None)
    if post is not None:
        post()


def validate_stages(pipeline: Pipeline, cfg_obj: Any) -> None:
    """Check the config sections of every stage of ``pipeline`` (numeric ranges, choices...) before the first stage
    runs, so a bad setting of the last stage fails in seconds, not after hours of training. A stage that depends on
    ``labels.model.task`` gets its whole ``labels`` section checked. Raises the first section's one-line
    ConfigError."""
    sections = dict.fromkeys(key.split(".")[0] for stage in pipeline.stages for key in stage.config_keys)
    for name in sections:
        _check(getattr(cfg_obj, name, None))


# ------------------------------------------------------------------------------------------------ the runner


def _quiet(_: str) -> None:
    return None


def run_pipeline(
    pipeline: Pipeline,
    cfg_obj: Any,
    run: RunDir,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
    log: Callable[[str], None] = print,
    rank: int | None = None,
) -> list[StageResult]:
    """Run (or skip) every stage in order; returns what happened to each (on every rank). ``rank`` defaults to the
    global rank the launcher's environment gives this process."""
    from autolabel.engine.trainer import seed_all  # Lightning: imported when a pipeline runs, not for --help

    validate_stages(pipeline, cfg_obj)
    cfg = OmegaConf.structured(cfg_obj)
    forced = pipeline.downstream(pipeline.stage(from_stage).name) if from_stage else set()
    if until_stage:
        pipeline.stage(until_stage)
    rank = global_rank() if rank is None else rank
    exported = os.environ.get(ATTEMPT_ENV)
    attempt = attempt_token(rank)
    say = log  # rank 0 speaks for all; the other ranks only say what they wait for
    if rank != 0:
        log = _quiet
    elif forced:
        # A forced stage and its dependents are stale from now on: if this run is interrupted, a plain rerun must not
        # skip them as finished, nor resume their old checkpoints.
        for name in forced:
            for f in (MANIFEST, RUNNING):
                (run.path / name / f).unlink(missing_ok=True)
    hashes: dict[str, str] = {}
    manifests: dict[str, dict] = {}
    results: list[StageResult] = []
    try:
        for stage in pipeline.stages:
            sdir = run.stage(stage.name)
            h = stage_hash(cfg, stage, hashes)
            mpath = sdir / MANIFEST
            try:
                prev = read_json(mpath) if mpath.is_file() else None
            except (OSError, ValueError):
                prev = None
            if prev and prev.get("stage_hash") == h and prev.get("status") == "done" and stage.name not in forced:
                if _outputs_intact(prev):
                    log(f"[{stage.name}] up to date, skipped")
                    hashes[stage.name], manifests[stage.name] = h, prev
                    results.append(StageResult(stage.name, "skipped", 0.0, prev))
                    if stage.name == until_stage:
                        break
                    continue
            t0 = time.perf_counter()
            if rank == 0:
                resuming = _prepare_stage_dir(sdir, h, fresh=stage.name in forced, attempt=attempt)
                state = " (forced)" if stage.name in forced else " (resuming)" if resuming else ""
                log(f"[{stage.name}] running{state}: {stage.description}")
            if rank != 0 and not stage.distributed:  # rank 0 runs it; wait for its manifest
                say(f"[{stage.name}] rank {rank}: runs on rank 0, waiting for its manifest")
                want = {"stage_hash": h, "attempt": attempt, "status": "done"}
                manifest = _await_file(mpath, want, sdir / RUNNING, attempt, f"stage '{stage.name}'", rank)
            else:
                if rank != 0:  # a training stage: start once rank 0 has prepared the folder
                    say(f"[{stage.name}] rank {rank}: training along with rank 0")
                    want = {"stage_hash": h, "attempt": attempt}
                    _await_file(
                        sdir / RUNNING, want, sdir / RUNNING, attempt, f"the start of stage '{stage.name}'", rank
                    )
                ctx = StageContext(cfg_obj, run, sdir, {n: manifests[n] for n in stage.needs})
                seed_all(OmegaConf.select(cfg, "trainer.seed", default=0))  # same weights whatever ran before
                try:
                    out = stage.fn(ctx) or {}
                except BaseException as e:
                    if rank == 0:
                        _mark_failed(sdir, h, attempt, e)
                    raise
                manifest = {
                    "stage": stage.name,
                    "status": "done",
                    "stage_hash": h,
                    "attempt": attempt,
                    "needs": list(stage.needs),
                    "seconds": round(time.perf_counter() - t0, 3),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "outputs": {k: str(v) for k, v in out.get("outputs", {}).items()},
                    "metrics": out.get("metrics", {}),
                }
                manifest.update({k: v for k, v in out.items() if k not in manifest})
                if rank == 0:
                    write_json(mpath, manifest)
            seconds = time.perf_counter() - t0
            hashes[stage.name], manifests[stage.name] = h, manifest
            results.append(StageResult(stage.name, "ran", seconds, manifest))
            log(f"[{stage.name}] done in {seconds:.1f}s")
            if stage.name == until_stage:
                break
    finally:
        if rank == 0 and exported != attempt:  # leave the environment as it was for whatever runs next in-process
            if exported is None:
                os.environ.pop(ATTEMPT_ENV, None)
            else:
                os.environ[ATTEMPT_ENV] = exported
    return results
