"""The default pipeline (`autolabel run`, handsoff_then_hilander) end to end on a tiny procedural setting: every stage
runs, the headline metrics and the report with its pictures exist, and a rerun skips everything."""

from __future__ import annotations

import csv

from autolabel.engine.io import read_json
from pipelines.cli import main

TINY = [
    "shapes.n_pool=60", "shapes.n_labeled=6", "shapes.n_test=8",
    "gan.kimg=0.032", "gan.model.z_dim=16", "gan.model.w_dim=16", "gan.model.channel_max=16", "gan.train.batch_size=4",
    "encoder.model.width=8", "encoder.model.max_width=16", "encoder.train.phase1_steps=3",
    "encoder.train.finetune_steps=2", "encoder.train.batch_size=4",
    "labels.model.n_members=2", "labels.model.hidden=[8,8]", "labels.model.min_class_pixels=1",
    "labels.train.max_steps=3", "labels.train.pixels_per_image=32", "labels.train.batch_pixels=32",
    "synthesis.n=8", "synthesis.drop_least_uncertain=1", "synthesis.batch_size=4",
    "downstream.max_epochs=1", "downstream.base=4", "downstream.batch_size=4",
    "classifier.max_epochs=1", "classifier.model.width=8", "classifier.model.depth=1", "classifier.model.embed_dim=16",
    "hilander.max_epochs=2", "hilander.model.hidden=16", "hilander.train.k_list=[4]", "hilander.train.levels_list=[2]",
    "hilander.cluster.k=4", "hilander.baselines=[kmeans]",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "progress=false",
]  # fmt: skip

STAGES = ("data", "gan", "encoder", "labels", "synthesis", "downstream", "classifier", "embed", "hilander", "cluster")


def test_default_pipeline_end_to_end(tmp_path, capsys):
    args = ["run", *TINY, f"run.root={tmp_path}"]
    assert main(args) == 0
    (run,) = [p for p in (tmp_path / "handsoff_then_hilander").iterdir() if p.is_dir()]
    for stage in STAGES:
        assert read_json(run / stage / "manifest.json")["status"] == "done", stage
    summary = read_json(run / "summary.json")
    for key in ("miou_synthetic", "miou_real_few", "pairwise_f", "bcubed_f", "nmi"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert "kmeans" in summary["baselines"]
    n_pool = sum(1 for _ in (run / "data" / "pool_unseen").rglob("*.png"))
    assert len(list(csv.DictReader((run / "cluster" / "clusters.csv").open()))) == n_pool > 0
    synth = read_json(run / "synthesis" / "manifest.json")
    assert synth["metrics"]["n_written"] == 8
    page = (run / "report" / "report.html").read_text()
    for picture in (
        "samples",
        "synthetic_overlays",
        "uncertainty",
        "inversions",
        "cluster_gallery",
        "gan_curves",
        "downstream_synthetic_curves",
    ):
        assert picture in page, picture
    out = capsys.readouterr().out
    assert "report:" in out and "miou_synthetic" in out

    assert main(args) == 0  # rerun: every stage is up to date
    assert {v["status"] for v in read_json(run / "summary.json")["stages"].values()} == {"skipped"}


def test_bring_your_own_gan_skips_gan_training(tmp_path):
    from autolabel.gan import Generator, save_generator

    gen = save_generator(Generator(resolution=16, z_dim=16, w_dim=16, n_mapping=1, channel_base=64, channel_max=16),
                         tmp_path / "pretrained.pt")  # fmt: skip
    args = ["run", "pipeline=handsoff", f"gan.pretrained={gen}", "until_stage=labels", *TINY, f"run.root={tmp_path}"]
    assert main(args) == 0
    (run,) = [p for p in (tmp_path / "handsoff").iterdir() if p.is_dir()]
    gan = read_json(run / "gan" / "manifest.json")
    assert gan["metrics"]["pretrained"] == str(gen) and not (run / "gan" / "checkpoints").exists()  # nothing trained
    assert read_json(run / "labels" / "manifest.json")["status"] == "done"  # the rest used the imported generator
    assert not (run / "synthesis").exists()  # until_stage
