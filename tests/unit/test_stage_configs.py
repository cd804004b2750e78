"""Every stage's config section checks its numeric ranges (one-line errors naming the key), and the runner checks
every stage's section of a pipeline before the first stage runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from autolabel.config import load_config
from autolabel.engine.rundir import RunDir
from autolabel.errors import ConfigError
from pipelines.definitions import PIPELINES, PipelineConfig
from pipelines.runner import Pipeline, Stage, run_pipeline


@pytest.mark.parametrize(
    "override",
    [
        "gan.kimg=-1",
        "gan.kimg=0",
        "classifier.max_epochs=0",
        "hilander.max_epochs=-5",
        "hilander.cluster.k=0",
        "data.per_class=0",
        "data.per_class=-3",
        "shapes.n_pool=0",
        "shapes.n_labeled=60",
        "synthesis.n=0",
        "synthesis.batch_size=0",
        "synthesis.filter_fraction=1.5",
        "downstream.steps=0",
        "downstream.depth=0",
        "downstream.base=0",
        "labels.refine_steps=-1",
    ],
)
def test_pipeline_sections_reject_out_of_range_numbers(override):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as err:
        load_config(PipelineConfig, overrides=[override])
    message = str(err.value)
    assert "\n" not in message
    assert f"{key.rsplit('.', 1)[-1]}={value}" in message  # names the key it rejects


def test_defaults_are_valid_for_every_pipeline():
    for name in PIPELINES:
        load_config(PipelineConfig, overrides=[f"pipeline={name}"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "gan", "images=x", "kimg=-2"], "kimg=-2.0 must be > 0"),
        (["synthesize", "checkpoint=x.ckpt", "n=0"], "n=0 and devices=1 must be >= 1"),
        (["fit", "labels", "generator=g", "encoder=e", "labeled=l", "refine_steps=-1"], "refine_steps=-1"),
        (["cluster", "checkpoint=c", "features=f", "baselines=[kmean]"], "unknown baseline 'kmean'"),
        (["fit", "segmentation", "train=a", "test=b", "max_epochs=0"], "max_epochs=0"),
    ],
)
def test_commands_reject_out_of_range_numbers(args, message, capsys):
    from pipelines.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@dataclass
class _Late:
    epochs: int = 3

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"late.epochs={self.epochs} must be >= 1")


@dataclass
class _Cfg:
    first: int = 1
    late: _Late = field(default_factory=_Late)


def test_runner_checks_every_stage_before_the_first_runs(tmp_path):
    calls: list[str] = []

    def first(ctx):
        calls.append("first")
        return {}

    def late(ctx):
        calls.append("late")
        return {}

    pipeline = Pipeline(
        "p", [Stage("first", first, config_keys=["first"]), Stage("late", late, needs=["first"], config_keys=["late"])]
    )
    cfg = _Cfg()
    cfg.late.epochs = 0  # set after construction: only the runner's check can catch it
    run = RunDir(tmp_path)
    with pytest.raises(ConfigError, match="late.epochs=0 must be >= 1"):
        run_pipeline(pipeline, cfg, run, log=lambda _: None)
    assert calls == []  # nothing ran, not even the first stage
    cfg.late.epochs = 2
    results = run_pipeline(pipeline, cfg, run, log=lambda _: None)
    assert calls == ["first", "late"] and [r.status for r in results] == ["ran", "ran"]
