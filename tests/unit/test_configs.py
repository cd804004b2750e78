"""Every YAML shipped under configs/ loads and validates against the schema of the command it is written for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    assert shipped == set(USES) | {"sweep/lander_grid.yaml", "sweep/handsoff_gan_seeds.yaml"}


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
    seeds = to_object(load_config(SweepConfig, yaml_files=[configs_dir() / "sweep" / "handsoff_gan_seeds.yaml"]))
    assert seeds.command == "run" and seeds.rank_by in seeds.metrics and len(expand_grid(dict(seeds.grid))) == 2


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


def _leaves(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += _leaves(v, key + ".") if isinstance(v, dict) else [(key, v)]
    return out


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", sorted(USES))
def test_every_value_in_a_shipped_config_reaches_the_resolved_config(name):
    """Each value written in the YAML is the value the command sees (no key silently dropped, renamed or overridden)."""
    from omegaconf import OmegaConf

    cmd_name, overrides = USES[name]
    obj = to_object(load_config(commands()[cmd_name].schema, yaml_files=[configs_dir() / name], overrides=overrides))
    raw = OmegaConf.to_container(OmegaConf.load(configs_dir() / name))
    leaves = _leaves(raw)
    assert leaves
    for key, value in leaves:
        got = _get(obj, key)
        got = list(got) if isinstance(got, (list, tuple)) else got
        assert got == value, (name, key, got, value)


def _resolved(name: str):
    cmd_name, overrides = USES[name]
    return to_object(load_config(commands()[cmd_name].schema, yaml_files=[configs_dir() / name], overrides=overrides))


def test_gan_config_reaches_the_gan_module_and_trainer(tmp_path):
    from autolabel.engine.trainer import build_trainer
    from autolabel.gan import GANModule

    cfg = _resolved("gan/weizmann_horse64.yaml")
    m = GANModule(cfg.gan, cfg.gan_train)
    g = m.generator
    assert (g.resolution, g.z_dim, g.w_dim) == (64, 256, 256)
    assert sum("Linear" in type(x).__name__ for x in g.style.modules()) == 4  # n_mapping
    assert g.input.input.shape[1] == 256  # channel_max caps the 4x4 constant
    assert m.r1_gamma == 1.0 and m.tcfg.batch_size == 32
    assert m.augment is not None and m.ada is not None and m.ada.target == 0.6
    trainer = build_trainer(cfg.trainer, tmp_path, accelerator="cpu", tensorboard=False)
    assert trainer.precision == "bf16-mixed"


def test_encoder_config_reaches_the_encoder(tmp_path):
    from autolabel.gan import Generator
    from autolabel.handsoff.encoder_module import EncoderModule

    cfg = _resolved("handsoff/encoder_64.yaml")
    gen = Generator(resolution=64, z_dim=8, w_dim=8, n_mapping=1, channel_base=64, channel_max=8)
    m = EncoderModule(cfg.encoder, cfg.encoder_train, generator=gen)
    assert m.encoder.__class__.__name__.lower().startswith(("pyramid", "inversion"))
    stem = next(mod for mod in m.encoder.modules() if isinstance(mod, torch.nn.Conv2d))
    assert stem.out_channels == 32  # encoder.width
    assert max(mod.out_channels for mod in m.encoder.modules() if isinstance(mod, torch.nn.Conv2d)) <= 256
    assert m.train_cfg.max_steps == 20000 + 2000 and m.train_cfg.lpips_net == "vgg"


def test_labels_config_reaches_the_label_generator():
    from autolabel.handsoff.label_generator import LabelGeneratorEnsemble

    cfg = _resolved("handsoff/labels_segmentation.yaml")
    lg = cfg.label_generator
    ens = LabelGeneratorEnsemble(12, lg.task, 3, None, lg.n_members, list(lg.hidden))
    assert ens.n_members == 10
    lin = [m for m in ens.members[0].modules() if isinstance(m, torch.nn.Linear)]
    assert [x.out_features for x in lin] == [256, 32, 3]
    assert (cfg.label_train.lr, cfg.label_train.batch_pixels, lg.min_class_pixels, cfg.refine_steps) == (
        0.001, 64, 30, 500)  # fmt: skip


def test_large_pool_config_reaches_the_lander_module():
    from autolabel.hilander.lander_module import LanderModule

    cfg = _resolved("hilander/large_pool.yaml")
    m = LanderModule(cfg.model, cfg.train, feature_dim=8)
    assert len(m.model.convs) == 1 and m.model.convs[0].lin.out_features == 512
    assert m.train_cfg.k_list == [10, 5, 3] and m.train_cfg.levels_list == [2, 3, 4] and m.train_cfg.lr == 0.01
    assert m.train_cfg.knn.nprobe == 8
