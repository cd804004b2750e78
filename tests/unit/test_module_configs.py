"""One constructor style: every LightningModule reads its config dataclasses through ``config.core.as_config``, so a
dataclass, the dict saved in its checkpoint and an OmegaConf node build the same module, and checkpoints written
with the earlier flat keyword arguments still load."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from autolabel.config.core import as_config
from autolabel.config.downstream import DownstreamConfig, KeypointNetConfig, SegmentationNetConfig
from autolabel.config.hilander import HiLanderTrainConfig, KnnConfig
from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import ConfigError


def test_as_config_reads_dataclasses_dicts_and_omegaconf_nodes():
    assert as_config(None, KnnConfig) == KnnConfig()
    cfg = KnnConfig(nprobe=4)
    assert as_config(cfg, KnnConfig) is cfg
    assert as_config({"nprobe": 4}, KnnConfig) == cfg
    assert as_config(OmegaConf.create({"nprobe": 4}), KnnConfig) == cfg
    nested = as_config({"lr": 0.5, "knn": {"method": "flat"}}, HiLanderTrainConfig)  # a checkpoint's asdict form
    assert isinstance(nested.knn, KnnConfig) and nested.knn.method == "flat" and nested.lr == 0.5
    with pytest.raises(ConfigError, match=r"KnnConfig has no field\(s\) \['nprob'\]; its fields: method, nprobe"):
        as_config({"nprob": 4}, KnnConfig)
    with pytest.raises(ConfigError, match="expected a KnnConfig or a dict of its fields, got int"):
        as_config(3, KnnConfig)
    with pytest.raises(ConfigError, match="knn.nprobe=0 must be >= 1"):  # the dataclass's own checks still run
        as_config({"nprobe": 0}, KnnConfig)


def _same_module(a, b) -> None:
    assert a.cfg == b.cfg
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def test_dense_modules_rebuild_from_their_hparams_and_from_old_flat_checkpoints():
    from autolabel.tasks.keypoints_module import KeypointModule
    from autolabel.tasks.segmentation_module import SegmentationModule

    seg = SegmentationModule(SegmentationNetConfig(base=4, depth=1, ignore_index=-100), n_classes=3)
    _same_module(seg, SegmentationModule(**seg.hparams))  # what load_from_checkpoint does
    old = {"n_classes": 3, "in_channels": 3, "base": 4, "depth": 1, "lr": 1e-3, "task": "segmentation",
           "ignore_index": -100}  # fmt: skip
    _same_module(seg, SegmentationModule(**old))
    kp = KeypointModule(KeypointNetConfig(base=4, depth=1, sigma=2.0), n_keypoints=3, mean_shape=[[0.5, 0.5]] * 3)
    _same_module(kp, KeypointModule(**kp.hparams))
    old_kp = {"n_keypoints": 3, "in_channels": 3, "base": 4, "depth": 1, "lr": 1e-3, "sigma": 2.0,
              "pck_threshold": 0.1, "mean_shape": [[0.5, 0.5]] * 3, "prior_sigma": 0.15, "heatmap_weight": 0.1,
              "eye_keypoints": None}  # fmt: skip
    _same_module(kp, KeypointModule(**old_kp))
    with pytest.raises(
        ConfigError, match=r"got a SegmentationNetConfig and also \[.base.\]: set those in the SegmentationNetConfig"
    ):
        SegmentationModule(SegmentationNetConfig(), n_classes=2, base=8)
    d = DownstreamConfig(base=8, depth=1, lr=0.01, sigma=2.5, pck_thresholds=[0.2], eye_keypoints=[0, 1])
    assert d.segmentation_net("depth") == SegmentationNetConfig("depth", 8, 1, 0.01, 255)
    assert d.keypoint_net() == KeypointNetConfig(8, 1, 0.01, 2.5, 0.2, eye_keypoints=[0, 1])


def test_label_generator_module_rebuilds_from_hparams_and_old_flat_checkpoints():
    from autolabel.handsoff.label_generator_module import LabelGeneratorModule

    model = LabelGeneratorConfig(n_classes=3, n_members=2, hidden=[8, 4], fp16=False, layers=[0, 1])
    m = LabelGeneratorModule(model, LabelTrainConfig(lr=0.01, batch_pixels=8), in_channels=12, class_names=list("abc"))
    again = LabelGeneratorModule(**m.hparams)
    _same_module(m, again)
    assert again.train_cfg == m.train_cfg and again.label_names() == {"classes": ["a", "b", "c"]}
    old = {
        "in_channels": 12,
        "task": "segmentation",
        "n_classes": 3,
        "n_keypoints": None,
        "n_members": 2,
        "hidden": [8, 4],
        "lr": 0.01,
        "batch_pixels": 8,
        "class_names": list("abc"),
        "layers": [0, 1],
        "working_resolution": -1,
        "fp16": False,
        "heatmap_sigma": 2.0,
        "depth_loss": "l1",
        "generator_path": None,
        "pixels_per_image": 4096,
        "images_per_step": 1,
        "keypoint_peak_fraction": 0.5,
        "seed": 0,
        "keypoint_names": None,
        "skeleton": None,
        "encoder_path": None,
    }  # the flat hparams of earlier checkpoints
    legacy = LabelGeneratorModule(**old)
    _same_module(m, legacy)
    assert legacy.train_cfg == m.train_cfg
    with pytest.raises(ConfigError, match="needs the segmentation output count resolved"):
        LabelGeneratorModule(LabelGeneratorConfig(), in_channels=12)  # n_classes=-1: count the folder first
    with pytest.raises(ConfigError, match=r"no setting\(s\) \['members'\]"):
        LabelGeneratorModule(in_channels=12, task="segmentation", n_classes=2, members=3)
