"""Labeling real images with a label generator (``autolabel.handsoff.label_real``): the synthesize layout plus each
image's uncertainty and a review list, resume, and the mismatches a user meets -- on a tiny untrained GAN."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.gan import Generator, save_generator
from autolabel.handsoff.encoder_module import EncoderModule
from autolabel.handsoff.hypercolumns import HypercolumnExtractor
from autolabel.handsoff.label_generator_module import LabelGeneratorModule
from autolabel.handsoff.label_real import label_images, load_label_models


def _gen(w_dim=16):
    torch.manual_seed(0)
    return Generator(resolution=16, z_dim=16, w_dim=w_dim, n_mapping=1, channel_base=64, channel_max=16).eval()


@pytest.fixture(scope="module")
def models():
    gen = _gen()
    enc = EncoderModule({"width": 8, "max_width": 16}, {"phase1_steps": 1, "finetune_steps": 0}, generator=gen)
    torch.manual_seed(1)
    module = LabelGeneratorModule(LabelGeneratorConfig(n_classes=3, n_members=3, hidden=[8, 8], fp16=False),
                                  LabelTrainConfig(batch_pixels=8), in_channels=HypercolumnExtractor(gen).channels,
                                  class_names=["background", "a", "b"])  # fmt: skip
    return gen, enc, module


def _folder(root, n=5, size=16, mode="RGB"):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / f"img{i}.png")
    return root


def test_labels_every_image_in_the_synthesize_layout(models, tmp_path):
    from autolabel.data.formats import detect_format
    from autolabel.data.layout import open_labeled

    gen, enc, module = models
    images = _folder(tmp_path / "real", n=5)
    out = tmp_path / "out"
    stats = label_images(module, gen, enc, images, out, batch_size=2, progress=False)
    assert stats["n_images"] == stats["n_labeled"] == 5 and stats["n_skipped"] == 0
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"img{i}" for i in range(5)]  # nothing filtered: every real image
    for r in rows:
        lab = np.asarray(Image.open(out / "labels" / f"{r['id']}.png"))
        assert lab.shape == (16, 16) and lab.max() < 3
        assert (out / "uncertainty" / f"{r['id']}.npy").is_file() and (
            out / "reconstructions" / f"{r['id']}.png"
        ).is_file()
        assert np.array_equal(np.asarray(Image.open(out / "images" / f"{r['id']}.png")),
                              np.asarray(Image.open(images / f"{r['id']}.png")))  # fmt: skip
        assert r["uncertainty"] >= 0 and r["inversion_mse"] > 0
    review = list(csv.DictReader((out / "review.csv").open()))
    scores = [float(r["uncertainty"]) for r in review]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in review] == ["1", "2", "3", "4", "5"]
    assert review[0]["id"] == stats["most_uncertain"][0]
    assert stats["max_uncertainty"] == pytest.approx(max(r["uncertainty"] for r in rows))
    assert all(p.is_file() for p in stats["figures"])
    # downstream commands and export read it like a synthetic dataset
    assert detect_format(out) == "synthetic"
    ds = open_labeled(out, "segmentation", 16)
    assert len(ds) == 5 and ds[0]["mask"].shape == (16, 16)
    assert json.loads((out / "plan.json").read_text())["classes"] == ["background", "a", "b"]


def test_rerun_resumes_and_other_settings_are_refused(models, tmp_path):
    gen, enc, module = models
    images = _folder(tmp_path / "real", n=3)
    out = tmp_path / "out"
    label_images(module, gen, enc, images, out, progress=False)
    (out / "records" / "img1.json").unlink()
    again = label_images(module, gen, enc, images, out, progress=False)
    assert again["n_labeled"] == 1 and again["n_skipped"] == 2
    with pytest.raises(DataError, match="another checkpoint, encoder or settings"):
        label_images(module, gen, enc, images, out, resize=True, progress=False)


def test_images_that_do_not_fit_the_gan(models, tmp_path):
    gen, enc, module = models
    big = _folder(tmp_path / "big", n=2, size=24)
    with pytest.raises(DataError, match="24x24 but the label checkpoint's GAN draws 16x16.*resize=true"):
        label_images(module, gen, enc, big, tmp_path / "o1", progress=False)
    stats = label_images(module, gen, enc, big, tmp_path / "o2", resize=True, progress=False)
    assert stats["n_images"] == 2 and Image.open(tmp_path / "o2" / "images" / "img0.png").size == (16, 16)
    grey = _folder(tmp_path / "grey", n=1, mode="L")
    with pytest.raises(DataError, match="greyscale image but the label checkpoint's GAN draws RGB"):
        label_images(module, gen, enc, grey, tmp_path / "o3", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nothing to label"):
        label_images(module, gen, enc, tmp_path / "empty", tmp_path / "o4", progress=False)
    with pytest.raises(ConfigError, match="lies inside the input images"):
        label_images(module, gen, enc, big, big / "out", resize=True, progress=False)


def _lightning_file(module, path):
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    return path


def test_checkpoint_without_encoder_or_with_another_gans_encoder(models, tmp_path):
    gen, enc, _ = models
    gen_path = save_generator(gen, tmp_path / "g.pt")
    ext = HypercolumnExtractor(gen)
    model = LabelGeneratorConfig(n_classes=3, n_members=2, hidden=[8, 8], fp16=False)
    old = LabelGeneratorModule(model, in_channels=ext.channels, generator_path=str(gen_path))
    ckpt = _lightning_file(old, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="records no inversion encoder.*encoder=ENC.ckpt"):
        load_label_models(ckpt)
    other = EncoderModule(
        {"width": 8, "max_width": 16}, {"phase1_steps": 1, "finetune_steps": 0}, generator=_gen(w_dim=8)
    )
    enc_other = _lightning_file(other, tmp_path / "enc_other.ckpt")
    with pytest.raises(CheckpointError, match="inverts into a GAN with .*'w_dim': 8"):
        load_label_models(ckpt, encoder=str(enc_other))
    enc_ok = _lightning_file(enc, tmp_path / "enc.ckpt")
    new = LabelGeneratorModule(model, in_channels=ext.channels, generator_path=str(gen_path),
                               encoder_path=str(enc_ok))  # fmt: skip
    module, g, e, paths = load_label_models(_lightning_file(new, tmp_path / "new.ckpt"))
    assert paths["encoder"] == str(enc_ok) and g.resolution == 16 and e.encoder is not None
