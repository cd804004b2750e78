"""Every YAML shipped under configs/ loads and validates against the schema of the command it is written for."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolabel.config import configs_dir, load_config, to_object
from pipelines.cli import commands
from pipelines.sweep import SweepConfig

# config file -> (command, overrides that stand in for the user's required paths)
USES = {
    "experiment/fashion_mnist_hilander.yaml": ("run", []),
    "hilander/large_pool.yaml": ("fit hilander", ["train_features=x.npz"]),
    "gan/weizmann_horse64.yaml": ("fit gan", ["images=imgs"]),
    "handsoff/encoder_64.yaml": ("fit encoder", ["generator=g.pt", "images=imgs"]),
    "handsoff/labels_segmentation.yaml": ("fit labels", ["generator=g.pt", "encoder=e.ckpt", "labeled=dir"]),
    "trainer/gpu8_ddp.yaml": ("fit hilander", ["train_features=x.npz"]),
    "data/weizmann_horse.yaml": ("run", []),
    "pipeline/handsoff_then_hilander.yaml": ("run", []),
    "experiment/handsoff_cpu.yaml": ("run", ["data.images=imgs", "data.labeled=lab"]),
    "experiment/handsoff_gpu.yaml": ("run", ["data.source=folders", "data.images=imgs", "data.labeled=lab"]),
    "experiment/handsoff_paper.yaml": ("run", ["data.source=folders", "data.images=imgs", "data.labeled=lab"]),
}


def test_every_shipped_config_is_covered():
    shipped = {str(p.relative_to(configs_dir())) for p in configs_dir().rglob("*.yaml")}
    assert shipped == set(USES) | {"sweep/lander_grid.yaml"}


@pytest.mark.parametrize("name", sorted(USES))
def test_config_validates(name):
    cmd_name, overrides = USES[name]
    cmd = commands()[cmd_name]
    cfg = load_config(cmd.schema, yaml_files=[configs_dir() / name], overrides=overrides)
    obj = to_object(cfg)
    assert obj is not None


def test_sweep_config_expands():
    from pipelines.sweep import expand_grid

    cfg = to_object(load_config(SweepConfig, yaml_files=[configs_dir() / "sweep" / "lander_grid.yaml"]))
    assert cfg.command == "fit hilander" and len(expand_grid(dict(cfg.grid))) == 4
    assert commands()[cfg.command]  # the swept command exists


def test_configs_dir_is_the_repo_folder():
    assert configs_dir() == Path(__file__).resolve().parents[2] / "configs"


def test_the_default_pipeline_file_is_the_default():
    """configs/pipeline/handsoff_then_hilander.yaml writes out what a bare `autolabel run` does: every value equal."""
    from omegaconf import OmegaConf

    from pipelines.definitions import PipelineConfig

    builtin = OmegaConf.to_container(load_config(PipelineConfig))
    written = OmegaConf.to_container(
        load_config(PipelineConfig, yaml_files=[configs_dir() / "pipeline" / "handsoff_then_hilander.yaml"])
    )
    assert written == builtin
    raw = OmegaConf.to_container(OmegaConf.load(configs_dir() / "pipeline" / "handsoff_then_hilander.yaml"))
    assert {"shapes", "gan", "encoder", "labels", "synthesis", "downstream", "classifier", "hilander"} <= set(raw)
