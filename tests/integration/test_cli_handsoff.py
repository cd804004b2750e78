"""HandsOff end to end through the CLI on a tiny procedural dataset: GAN -> encoder -> labels -> synthesis."""

from __future__ import annotations

import json

import pytest

from autolabel.data.procedural import make_shapes_dataset
from autolabel.engine.io import read_json
from pipelines.cli import main

GAN = ["gan.resolution=16", "gan.z_dim=32", "gan.w_dim=32", "gan.n_mapping=2", "gan.channel_base=64",
       "gan.channel_max=16", "gan_train.batch_size=4"]  # fmt: skip
COMMON = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("handsoff")
    data = make_shapes_dataset(root / "shapes", 12, size=16, seed=0)
    runs = root / "runs"
    assert main(["fit", "gan", f"images={data / 'images'}", "kimg=0.024", *GAN, *COMMON, f"run.root={runs}"]) == 0
    gen = next((runs / "gan").glob("*/gan/generator.pt"))
    assert main(["fit", "encoder", f"generator={gen}", f"images={data / 'images'}", "encoder.width=8",
                 "encoder.max_width=16", "encoder_train.phase1_steps=3", "encoder_train.finetune_steps=2",
                 "encoder_train.batch_size=4", "lpips_random=true", *COMMON, f"run.root={runs}"]) == 0  # fmt: skip
    enc = next((runs / "encoder").glob("*/encoder/checkpoints/last.ckpt"))
    assert main(["fit", "labels", f"generator={gen}", f"encoder={enc}", f"labeled={data}", "refine_steps=2",
                 "lpips_random=true", "label_generator.n_members=3", "label_generator.hidden=[16,8]",
                 "label_generator.fp16=false", "label_generator.min_class_pixels=2", "label_train.max_steps=4",
                 "label_train.pixels_per_image=64", "label_train.batch_pixels=16", *COMMON,
                 f"run.root={runs}"]) == 0  # fmt: skip
    labels_run = next(p for p in (runs / "labels").iterdir() if p.is_dir())
    return {"root": root, "data": data, "gen": gen, "enc": enc, "labels_run": labels_run,
            "ckpt": labels_run / "labels" / "checkpoints" / "last.ckpt"}  # fmt: skip


def test_training_stages_write_their_artifacts(trained):
    m = read_json(trained["labels_run"] / "labels" / "manifest.json")
    assert m["metrics"]["labeled_images"] == 12
    assert m["metrics"]["hypercolumn_width"] > 0
    assert (trained["labels_run"] / "labels" / "inversions.png").is_file()
    assert (trained["labels_run"] / "labels" / "latents.pt").is_file()
    enc_manifest = next((trained["root"] / "runs" / "encoder").glob("*/encoder/manifest.json"))
    assert read_json(enc_manifest)["metrics"]["steps"] == 5  # phase 1 + the capped fine-tuning, then a hard stop
    gan_manifest = next((trained["root"] / "runs" / "gan").glob("*/gan/manifest.json"))
    assert read_json(gan_manifest)["figures"][0].endswith("samples.png")


def test_synthesize_single_and_sharded_agree(trained, tmp_path):
    out1, out2 = tmp_path / "one", tmp_path / "two"
    base = ["synthesize", f"checkpoint={trained['ckpt']}", "n=5", "batch_size=3", "accelerator=cpu", "progress=false"]
    assert main([*base, f"out={out1}"]) == 0
    assert main([*base, f"out={out2}", "devices=2"]) == 0
    rows1 = [json.loads(line) for line in (out1 / "manifest.jsonl").read_text().splitlines()]
    rows2 = [json.loads(line) for line in (out2 / "manifest.jsonl").read_text().splitlines()]
    assert len(rows1) == 5 and [r["id"] for r in rows1] == [r["id"] for r in rows2]
    for out in (out1, out2):  # pictures: label overlays and the uncertainty histogram + maps
        assert (out / "synthetic_overlays.png").stat().st_size > 0 and (out / "uncertainty.png").stat().st_size > 0
    for r in rows1:
        assert (out1 / "images" / f"{r['id']}.png").is_file() and (out1 / "labels" / f"{r['id']}.png").is_file()
    assert (out1 / "images" / f"{rows1[0]['id']}.png").read_bytes() == (
        out2 / "images" / f"{rows1[0]['id']}.png"
    ).read_bytes()
    # rerun: nothing regenerated, same manifest
    assert main([*base, f"out={out1}"]) == 0
    assert [json.loads(line)["id"] for line in (out1 / "manifest.jsonl").read_text().splitlines()] == [
        r["id"] for r in rows1
    ]


def test_downstream_segmentation_on_synthetic_and_real(trained, tmp_path):
    synth = tmp_path / "synth"
    assert main(["synthesize", f"checkpoint={trained['ckpt']}", "n=4", f"out={synth}", "accelerator=cpu",
                 "progress=false"]) == 0  # fmt: skip
    for train in (synth, trained["data"]):
        assert main(["fit", "segmentation", f"train={train}", f"test={trained['data']}", "size=16", "base=4",
                     "depth=2", "max_epochs=1", *COMMON, f"run.root={tmp_path / 'seg'}", "run.resume=never"]) == 0  # fmt: skip
    runs = sorted(p for p in (tmp_path / "seg" / "segmentation").iterdir() if p.is_dir())
    real = read_json(runs[-1] / "summary.json")
    assert 0.0 <= real["miou"] <= 1.0 and real["test_images"] == 12 and real["train_images"] == 12
    assert read_json(runs[0] / "summary.json")["train_images"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synthesize", "checkpoint=/nope.ckpt"], "label-generator checkpoint not found"),
        (["fit", "encoder", "generator=/nope.pt", "images=/tmp"], "not found"),
        (["weights", "lpips", "src=/nope.tar.gz"], "nope.tar.gz"),
        (["synthesize", "checkpoint=x", "n=0"], "must be >= 1"),
    ],
)
def test_handsoff_bad_input(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
