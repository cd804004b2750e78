"""A pipeline is a DAG of stages; each stage writes its artifacts plus a ``manifest.json`` into its own folder.

Rerunning a pipeline skips every stage whose manifest says it finished with the same *stage hash* (its own config
sections plus the hashes of the stages it reads) and whose declared outputs still exist; an interrupted stage runs
again and its training resumes from ``<stage>/checkpoints/last.ckpt``. ``from_stage=NAME`` forces NAME and
everything downstream of it to run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autolabel.config import config_hash
from autolabel.engine.io import read_json, write_json
from autolabel.engine.rundir import RunDir, global_rank
from autolabel.engine.trainer import seed_all
from autolabel.errors import ConfigError

MANIFEST = "manifest.json"
RUNNING = "running.json"  # marks a started stage: its config hash, so an interruption resumes only the same run


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


@dataclass
class Pipeline:
    name: str
    stages: list[Stage]
    description: str = ""

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


def _prepare_stage_dir(sdir: Path, stage_hash: str) -> bool:
    """Mark ``sdir`` as running ``stage_hash``; True when it resumes an interrupted run of the same stage hash.

    Checkpoints left by a finished run, a forced rerun or another config would resume the wrong training (other
    settings, other step counts), so they are removed first; only an interrupted run with the same hash keeps them.
    """
    import shutil

    marker = sdir / RUNNING
    prev = read_json(marker) if marker.is_file() else {}
    resuming = prev.get("stage_hash") == stage_hash and not (sdir / MANIFEST).is_file()
    if not resuming and global_rank() == 0:
        shutil.rmtree(sdir / "checkpoints", ignore_errors=True)
        (sdir / MANIFEST).unlink(missing_ok=True)
        write_json(marker, {"stage_hash": stage_hash})
    return resuming


def run_pipeline(
    pipeline: Pipeline,
    cfg_obj: Any,
    run: RunDir,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
    log: Callable[[str], None] = print,
) -> list[StageResult]:
    """Run (or skip) every stage in order; returns what happened to each."""
    cfg = OmegaConf.structured(cfg_obj)
    forced = pipeline.downstream(pipeline.stage(from_stage).name) if from_stage else set()
    if until_stage:
        pipeline.stage(until_stage)
    hashes: dict[str, str] = {}
    manifests: dict[str, dict] = {}
    results: list[StageResult] = []
    for stage in pipeline.stages:
        sdir = run.stage(stage.name)
        h = stage_hash(cfg, stage, hashes)
        mpath = sdir / MANIFEST
        prev = read_json(mpath) if mpath.is_file() else None
        if prev and prev.get("stage_hash") == h and prev.get("status") == "done" and stage.name not in forced:
            if _outputs_intact(prev):
                log(f"[{stage.name}] up to date, skipped")
                hashes[stage.name], manifests[stage.name] = h, prev
                results.append(StageResult(stage.name, "skipped", 0.0, prev))
                if stage.name == until_stage:
                    break
                continue
        resuming = _prepare_stage_dir(sdir, h)
        state = " (forced)" if stage.name in forced else " (resuming)" if resuming else ""
        log(f"[{stage.name}] running{state}: {stage.description}")
        t0 = time.perf_counter()
        ctx = StageContext(cfg_obj, run, sdir, {n: manifests[n] for n in stage.needs})
        seed_all(OmegaConf.select(cfg, "trainer.seed", default=0))  # same weights whatever ran before in-process
        out = stage.fn(ctx) or {}
        seconds = time.perf_counter() - t0
        manifest = {
            "stage": stage.name,
            "status": "done",
            "stage_hash": h,
            "needs": list(stage.needs),
            "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "outputs": {k: str(v) for k, v in out.get("outputs", {}).items()},
            "metrics": out.get("metrics", {}),
        }
        manifest.update({k: v for k, v in out.items() if k not in manifest})
        if global_rank() == 0:
            write_json(mpath, manifest)
        hashes[stage.name], manifests[stage.name] = h, manifest
        results.append(StageResult(stage.name, "ran", seconds, manifest))
        log(f"[{stage.name}] done in {seconds:.1f}s")
        if stage.name == until_stage:
            break
    return results
