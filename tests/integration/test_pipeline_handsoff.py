"""The default pipeline (`autolabel run`, handsoff_then_hilander) end to end on a tiny procedural setting: every stage
runs, the headline metrics and the report with its pictures exist, and a rerun skips everything."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from autolabel.engine.io import read_json
from pipelines.cli import main
from pipelines.definitions import TINY_OVERRIDES

# the floor below needs a trained real-few net: 300 downstream steps (the rest as the shared tiny settings)
TINY = [*TINY_OVERRIDES, "downstream.steps=300", "downstream.val_every=50", "downstream.base=8", "downstream.batch_size=2",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "progress=false"]  # fmt: skip


def _majority_miou(run, val_fraction: float) -> float:
    import torch

    from autolabel.data.labeled import FolderSubset, LabeledFolder, holdout_split
    from autolabel.metrics.dense import confusion_matrix, miou

    outputs = read_json(run / "data" / "manifest.json")["outputs"]
    labeled = LabeledFolder(outputs["labeled"], task="segmentation", size=16)
    test = LabeledFolder(outputs["test"], task="segmentation", size=16)
    k = max(labeled.n_classes, test.n_classes)
    masks = torch.stack([labeled[i]["mask"] for i in range(len(labeled))]).long()
    majority = torch.nn.functional.one_hot(masks, k).sum(0).argmax(-1)
    scored = FolderSubset(test, holdout_split(len(test), val_fraction, seed=0)[1])
    gts = torch.stack([scored[i]["mask"] for i in range(len(scored))]).long()
    return miou(confusion_matrix(majority.expand_as(gts), gts, k))[0]


STAGES = ("data", "gan", "encoder", "labels", "synthesis", "downstream", "classifier", "embed", "hilander", "cluster")


def test_default_pipeline_end_to_end(tmp_path, capsys):
    args = ["run", *TINY, f"run.root={tmp_path}"]
    assert main(args) == 0
    (run,) = [p for p in (tmp_path / "handsoff_then_hilander").iterdir() if p.is_dir()]
    for stage in STAGES:
        assert read_json(run / stage / "manifest.json")["status"] == "done", stage
    summary = read_json(run / "summary.json")
    for key in ("miou_synthetic", "miou_real_few", "miou_mixed", "miou_finetuned", "pairwise_f", "bcubed_f", "nmi"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert "kmeans" in summary["baselines"]
    # floor: the net trained on the few real labels beats the constant baseline, the per-pixel majority class of the
    # labeled masks, on the same scored slice of the test folder. (At this scale the synthetic-trained net has no
    # honest chance -- a 0.03-kimg GAN and a 3-step label generator -- so its mIoU is only bounded.)
    base = _majority_miou(run, val_fraction=0.2)
    assert summary["miou_real_few"] > base, (summary["miou_real_few"], base, summary["miou_synthetic"])
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
        "downstream_finetuned_finetune_curves",  # a sub-run's phase
    ):
        assert picture in page, picture
    out = capsys.readouterr().out
    assert "report:" in out and "miou_synthetic" in out

    assert main(args) == 0  # rerun: every stage is up to date
    assert {v["status"] for v in read_json(run / "summary.json")["stages"].values()} == {"skipped"}

    # from_stage=downstream retrains both sub-runs from scratch (their old last.ckpt must not be "resumed")
    sub_ckpt = run / "downstream" / "synthetic" / "checkpoints" / "last.ckpt"
    before = sub_ckpt.stat().st_mtime_ns
    quick = ["downstream.steps=10", "downstream.val_every=5"]  # the floor above is checked; this is about the rerun
    # ... with AdaBN on the unlabeled pool the GAN trained on, and every set trained on two seeds
    rerun = [f"run.dir={run}", "from_stage=downstream", "downstream.adapt_bn=true", "downstream.repeats=2"]
    assert main([*args, *rerun, *quick]) == 0
    stages = read_json(run / "summary.json")["stages"]
    assert stages["downstream"]["status"] == "ran" and stages["synthesis"]["status"] == "skipped"
    pool = len(list(Path(read_json(run / "data" / "manifest.json")["outputs"]["images"]).glob("*.png")))
    per_set = read_json(run / "downstream" / "manifest.json")["metrics"]["downstream"]
    assert all(per_set[s]["adapt_bn_images"] == min(pool, 512) for s in ("synthetic", "real_few", "mixed", "finetuned"))
    assert sub_ckpt.stat().st_mtime_ns != before
    assert all([p["seed"] for p in per_set[s]["per_seed"]] == [0, 1] for s in ("synthetic", "real_few"))
    assert (run / "downstream" / "real_few_seed1" / "checkpoints" / "best.ckpt").is_file()
    assert "miou_synthetic_sd" in read_json(run / "summary.json")  # the headline
    steps = [int(r["step"]) for r in csv.DictReader((run / "downstream" / "synthetic" / "logs" / "metrics.csv").open())]
    assert steps == sorted(steps)  # one training's log, not a resumed one appended to the old (steps would restart)

    # a changed synthesis.n in the same run directory regenerates the dataset instead of reusing the old images
    started = time.time()
    assert main([*args, f"run.dir={run}", "synthesis.n=5", "until_stage=synthesis"]) == 0
    assert read_json(run / "synthesis" / "manifest.json")["metrics"]["n_written"] == 5
    synthetic = run / "synthesis" / "synthetic"
    kept = [line for line in (synthetic / "manifest.jsonl").read_text().splitlines() if line]
    assert len(kept) == 5
    old = [p for p in synthetic.rglob("*") if p.is_file() and p.stat().st_mtime < started - 1]
    assert old == []  # every file was written by the new run


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


def test_your_own_folders_via_data_root(tmp_path):
    """DESIGN's `autolabel run pipeline=handsoff_then_hilander data.root=/data/faces`: a dataset folder with images/,
    labeled/, test/, train/<class>/ and pool/ instead of the procedural shapes, end to end."""
    import shutil

    from autolabel.data.procedural import make_shapes_dataset

    faces = tmp_path / "faces"
    src = make_shapes_dataset(tmp_path / "src", 60, size=16, seed=7)
    shutil.copytree(src / "images", faces / "images")
    make_shapes_dataset(faces / "labeled", 6, size=16, seed=8)
    make_shapes_dataset(faces / "test", 8, size=16, seed=9)
    for name, cats in (("train", ["00", "01", "02", "03"]), ("pool", ["06", "07", "08", "09"])):
        for c in cats:
            shutil.copytree(src / "unlabeled" / c, faces / name / c)
    sets = "downstream.sets=[synthetic,real_few]"  # every set is the default test's job
    runs = tmp_path / "runs"
    args = ["run", "pipeline=handsoff_then_hilander", f"data.root={faces}", *TINY, sets, f"run.root={runs}"]
    assert main(args) == 0
    (run,) = [p for p in (runs / "handsoff_then_hilander").iterdir() if p.is_dir()]
    data = read_json(run / "data" / "manifest.json")
    assert data["outputs"]["images"] == str(faces / "images") and data["outputs"]["pool_dir"] == str(faces / "pool")
    assert data["metrics"] == {"pool_images": 60, "labeled_images": 6, "test_images": 8}
    assert not (run / "data" / "pool").exists()  # nothing procedural was rendered
    assert read_json(run / "gan" / "manifest.json")["metrics"]["images"] == 60  # the GAN saw the user's pool
    summary = read_json(run / "summary.json")
    for key in ("miou_synthetic", "miou_real_few", "nmi"):
        assert 0.0 <= summary[key] <= 1.0, key
    n_pool = sum(1 for _ in (faces / "pool").rglob("*.png"))
    assert len(list(csv.DictReader((run / "cluster" / "clusters.csv").open()))) == n_pool
