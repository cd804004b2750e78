import math

import pytest
import pytorch_lightning as pl
import torch

from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig, SynthesisConfig
from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.gan import Generator
from autolabel.handsoff.label_generator import (
    LabelGeneratorEnsemble,
    PixelMLP,
    decode_keypoints,
    image_uncertainty,
    js_divergence,
    keypoint_heatmaps,
    majority_vote,
)
from autolabel.handsoff.label_module import (
    HypercolumnPixelDataset,
    LabelDataModule,
    LabelGeneratorModule,
    suppress_small_classes,
)


def tiny_gen() -> Generator:
    torch.manual_seed(0)
    return Generator(resolution=16, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32).eval()


def test_mlp_init_std():
    torch.manual_seed(0)
    m = PixelMLP(512, 4, (256, 32))
    w = m.net[0].weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert torch.all(m.net[0].bias == 0)


def test_ensemble_shapes_and_predict():
    torch.manual_seed(0)
    ens = LabelGeneratorEnsemble(12, "segmentation", n_classes=3, n_members=4, hidden=(8, 4))
    x = torch.randn(10, 12)
    assert ens(x).shape == (4, 10, 3)
    ens.eval()
    p = ens.predict(x)
    assert p["label"].shape == (10,) and p["probs"].shape == (10, 3) and p["uncertainty"].shape == (10,)
    kp = LabelGeneratorEnsemble(12, "keypoints", n_keypoints=2, n_members=3, hidden=(8, 4)).eval()
    q = kp.predict(x)
    assert q["heatmap"].shape == (10, 2) and q["uncertainty"].shape == (10,)
    dp = LabelGeneratorEnsemble(12, "depth", n_members=3, hidden=(8, 4)).eval()
    d = dp.predict(x)
    assert d["depth"].shape == (10,) and (d["uncertainty"] >= 0).all()


def test_majority_vote_known_answer():
    # 3 members, 4 pixels
    labels = torch.tensor([[0, 1, 2, 2], [0, 2, 2, 1], [1, 2, 0, 0]])
    assert majority_vote(labels, 3).tolist() == [0, 2, 2, 0]  # last pixel: tie 0/1/2 -> lowest


def test_js_divergence_known_answers():
    p = torch.tensor([[0.2, 0.3, 0.5]]).expand(5, 1, 3)
    assert js_divergence(p).abs().max() < 1e-6
    two = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert js_divergence(two).item() == pytest.approx(math.log(2), abs=1e-5)


def test_image_uncertainty_top_fraction():
    s = torch.arange(20, dtype=torch.float32).reshape(1, 4, 5)
    assert image_uncertainty(s, 0.1).item() == pytest.approx(18.5)  # top 2 of 20


def test_keypoint_decode_subpixel_exact():
    coords = torch.tensor([[[5.3, 7.6], [10.0, 2.0], [0.0, 15.0]]])
    hm = keypoint_heatmaps(coords, 16, sigma=1.5)
    dec, conf = decode_keypoints(hm)  # log-parabola refinement is exact for a Gaussian peak
    torch.testing.assert_close(dec, coords, atol=1e-4, rtol=0)
    assert conf.shape == (1, 3) and conf[0, 1].item() == pytest.approx(1.0)
    soft, _ = decode_keypoints(hm, refine="soft_argmax")
    torch.testing.assert_close(soft[0, 1], coords[0, 1], atol=1e-5, rtol=0)  # symmetric peak on a pixel
    none, _ = decode_keypoints(hm, refine="none")
    assert none[0, 0].tolist() == [5.0, 8.0]
    with pytest.raises(DataError, match="B, K, 2"):
        keypoint_heatmaps(torch.zeros(3, 2), 16)
    with pytest.raises(ConfigError, match="refine"):
        decode_keypoints(hm, refine="mean")


def test_suppress_small_classes():
    lab = torch.zeros(1, 10, 10, dtype=torch.long)
    lab[0, :5] = 1  # 50 pixels
    lab[0, 9, :3] = 2  # 3 pixels
    out = suppress_small_classes(lab, 30)
    assert (out == 1).sum() == 50 and (out == 2).sum() == 0


def test_bad_config_and_inputs():
    with pytest.raises(ConfigError, match="task"):
        LabelGeneratorEnsemble(8, "boxes")
    with pytest.raises(ConfigError, match="n_classes"):
        LabelGeneratorEnsemble(8, "segmentation", n_classes=1)
    ens = LabelGeneratorEnsemble(8, "segmentation", n_classes=2, n_members=2, hidden=(4, 4))
    with pytest.raises(DataError, match="expected"):
        ens(torch.zeros(3, 9))
    with pytest.raises(ConfigError, match="n_keypoints"):
        LabelGeneratorConfig(task="keypoints")
    with pytest.raises(ConfigError, match="lr"):
        LabelTrainConfig(lr=0)
    with pytest.raises(ConfigError, match="filter_fraction"):
        SynthesisConfig(filter_fraction=1.0)
    g = tiny_gen()
    ws = torch.zeros(2, g.num_ws, g.w_dim)
    with pytest.raises(DataError, match="one label per"):
        HypercolumnPixelDataset(g, ws, torch.zeros(3, 16, 16, dtype=torch.long))
    with pytest.raises(DataError, match="negative"):
        HypercolumnPixelDataset(g, ws, -torch.ones(2, 16, 16, dtype=torch.long))


def test_config_omegaconf_structured():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(LabelGeneratorConfig)
    cfg.layers = [0, 1]
    obj = OmegaConf.to_object(cfg)
    assert obj.layers == [0, 1] and obj.n_members == 10


def _brightness_data(g, n=4):
    torch.manual_seed(5)
    with torch.no_grad():
        w = g.mapping(torch.randn(n, g.z_dim))
        ws = w[:, None].repeat(1, g.num_ws, 1)
        img = g.synthesis(ws)
    bright = img.mean(1)
    labels = (bright > bright.flatten(1).median(1).values[:, None, None]).long()
    return ws, labels


def test_label_module_learns_brightness_rule(tmp_path):
    g = tiny_gen()
    ws, labels = _brightness_data(g)
    ds = HypercolumnPixelDataset(g, ws, labels, pixels_per_image=256, images_per_step=2, min_class_pixels=0, seed=0)
    module = LabelGeneratorModule(
        ds.extractor.channels,
        "segmentation",
        n_classes=2,
        n_members=3,
        hidden=(32, 16),
        lr=1e-2,
        batch_pixels=256,
        class_names=["dark", "bright"],
    )
    assert ds.n_outputs == 2
    x, y = next(iter(ds))
    assert x.shape == (512, ds.extractor.channels) and y.shape == (512,)
    with torch.no_grad():
        before = module.ensemble.member_losses(module.ensemble(x), y).mean().item()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=12,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=LabelDataModule(ds))
    module.eval()
    with torch.no_grad():
        after = module.ensemble.member_losses(module.ensemble(x), y).mean().item()
        acc = (module.ensemble.predict(x)["label"] == y).float().mean().item()
    assert after < before
    assert acc > 0.7
    # checkpoint is self-contained
    ckpt = tmp_path / "lg.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = LabelGeneratorModule.load_from_checkpoint(ckpt)
    assert loaded.hparams.class_names == ["dark", "bright"] and loaded.hparams.task == "segmentation"
    ext = loaded.make_extractor(g)
    assert ext.channels == module.ensemble.in_channels
    loaded.eval()
    torch.testing.assert_close(loaded.ensemble(x), module.ensemble(x))
    small = Generator(resolution=8, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32)
    with pytest.raises(CheckpointError, match="load the generator"):
        loaded.make_extractor(small)


def test_depth_and_keypoint_streams_train():
    g = tiny_gen()
    ws, labels = _brightness_data(g, n=2)
    depth = labels.float() * 2 + 1
    ds = HypercolumnPixelDataset(g, ws, depth, task="depth", pixels_per_image=64, layers=[4, 5])
    x, y = next(iter(ds))
    assert y.dtype == torch.float32 and x.shape == (64, ds.extractor.channels)
    kps = torch.tensor([[[3.0, 4.0]], [[8.0, 9.0]]])
    dk = HypercolumnPixelDataset(g, ws, kps, task="keypoints", pixels_per_image=32, heatmap_sigma=1.0, fp16=True)
    xk, yk = next(iter(dk))
    assert xk.dtype == torch.float16 and yk.shape == (32, 1)
    module = LabelGeneratorModule(dk.extractor.channels, "keypoints", n_keypoints=1, n_members=2, hidden=(8, 4))
    loss = module.training_step((xk, yk), 0)
    loss.backward()
    assert all(p.grad is not None for p in module.ensemble.parameters())
