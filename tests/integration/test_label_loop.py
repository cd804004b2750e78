"""The loop end to end through the CLI on tiny procedural settings: ``autolabel select``, the ``label_loop`` pipeline
(it stops for labels, resumes once they are in, labels the real pool and scores the direct labels) and
``autolabel label`` on the trained checkpoint."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_pipeline_handsoff import TINY

from autolabel.data.procedural import make_shapes_dataset
from autolabel.engine.io import read_json
from pipelines.cli import main

# no quality floor is asserted here, so the downstream nets get a few steps instead of TINY's 300
LOOP = ["pipeline=label_loop", "select.n=6", *(a for a in TINY if not a.startswith(("classifier", "hilander"))),
        "downstream.steps=10", "downstream.val_every=5"]  # fmt: skip
STAGES = ("pool", "select", "labeled", "gan", "encoder", "labels", "synthesis", "label_real", "downstream")


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    """A label_loop run that first waits for labels, then (masks copied in by hand) runs to the end."""
    root = tmp_path_factory.mktemp("loop")
    args = ["run", *LOOP, f"run.root={root}"]
    first = main(args)
    (run,) = [p for p in (root / "label_loop").iterdir() if p.is_dir()]
    waiting = {s: (run / s / "manifest.json").is_file() for s in STAGES}
    rows = list(csv.DictReader((run / "select" / "selected.csv").open()))
    for r in rows:  # the person labeling: ground truth of the rendered pool, by the picked image's source name
        src = run / "pool" / "pool" / "masks" / f"{r['id']}.png"
        shutil.copyfile(src, run / "select" / "masks" / f"{r['id']}.png")
    second = main(args)
    return {"root": root, "run": run, "args": args, "first": first, "second": second, "waiting": waiting, "rows": rows}


def test_the_loop_waits_for_labels_then_runs_to_the_end(loop_run, capsys):
    run = loop_run["run"]
    assert loop_run["first"] == 3  # stopped for labels: not an error, not done
    assert loop_run["waiting"] == {s: s in ("pool", "select") for s in STAGES}  # nothing trained before the labels
    assert len(loop_run["rows"]) == 6 and (run / "select" / "contact_sheet.png").is_file()
    assert loop_run["second"] == 0
    for stage in STAGES:
        assert read_json(run / stage / "manifest.json")["status"] == "done", stage
    labeled = run / "labeled" / "labeled"
    assert sorted(p.stem for p in (labeled / "masks").iterdir()) == sorted(r["id"] for r in loop_run["rows"])
    assert read_json(run / "labels" / "manifest.json")["metrics"]["labeled_images"] == 6  # trained on the picks
    assert read_json(run / "gan" / "manifest.json")["metrics"]["images"] == 60  # the GAN saw the whole pool
    summary = read_json(run / "summary.json")
    for key in ("miou_direct", "miou_real_few", "miou_synthetic", "miou_mixed", "miou_constant"):
        assert 0.0 <= summary[key] <= 1.0, key
    real = read_json(run / "label_real" / "manifest.json")
    assert real["metrics"]["n_images"] == 60 and real["metrics"]["direct"]["test_images"] == 6  # 8 minus val slice
    pool_labels = run / "label_real" / "pool_labels"
    assert len((pool_labels / "manifest.jsonl").read_text().splitlines()) == 60
    review = list(csv.DictReader((pool_labels / "review.csv").open()))
    assert [float(r["uncertainty"]) for r in review] == sorted((float(r["uncertainty"]) for r in review), reverse=True)
    page = (run / "report" / "report.html").read_text()
    for picture in ("contact_sheet", "most_uncertain", "least_uncertain", "downstream_real_few_curves"):
        assert picture in page, picture
    capsys.readouterr()
    assert main(loop_run["args"]) == 0  # rerun: every stage is up to date
    assert {v["status"] for v in read_json(run / "summary.json")["stages"].values()} == {"skipped"}


def test_waiting_message_says_where_the_masks_go(tmp_path, capsys):
    assert main(["run", *LOOP, "until_stage=labeled", f"run.root={tmp_path}"]) == 3
    out = capsys.readouterr().out
    (run,) = [p for p in (tmp_path / "label_loop").iterdir() if p.is_dir()]
    assert "waiting for labels: 6 of 6 selected images" in out and str(run / "select" / "masks") in out
    assert "rerun the same command" in out and "LABEL_ME.txt" in out


def test_oracle_copies_ground_truth_masks(tmp_path):
    assert main(["run", *LOOP, "select.oracle=true", "until_stage=labeled", f"run.root={tmp_path}"]) == 0
    (run,) = [p for p in (tmp_path / "label_loop").iterdir() if p.is_dir()]
    for r in csv.DictReader((run / "select" / "selected.csv").open()):
        mask = run / "labeled" / "labeled" / "masks" / f"{r['id']}.png"
        assert mask.read_bytes() == (run / "pool" / "pool" / "masks" / f"{r['id']}.png").read_bytes()
    assert (run / "labeled" / "labeled" / "labels.json").is_file()  # the class names travel with the labels


def test_label_command_on_the_trained_checkpoint(loop_run, tmp_path, capsys):
    run = loop_run["run"]
    ckpt = run / "labels" / "checkpoints" / "last.ckpt"
    images = run / "pool" / "test" / "images"
    out = tmp_path / "direct"
    assert main(["label", f"checkpoint={ckpt}", f"images={images}", f"out={out}", "progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "review (most uncertain first)" in printed and str(out / "review.csv") in printed
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["classes"][0] == "background" for r in rows)
    # the pipeline labeled the same test images with the same checkpoint: identical masks
    for r in rows:
        ours = np.asarray(Image.open(out / "labels" / f"{r['id']}.png"))
        assert np.array_equal(
            ours, np.asarray(Image.open(run / "label_real" / "test_labels" / "labels" / f"{r['id']}.png"))
        )
    big = make_shapes_dataset(tmp_path / "big", 2, size=32, seed=5)
    assert main(["label", f"checkpoint={ckpt}", f"images={big / 'images'}", f"out={tmp_path / 'o'}"]) == 2
    assert "32x32 but the label checkpoint's GAN draws 16x16" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["label", f"checkpoint={ckpt}", f"images={tmp_path / 'empty'}", f"out={tmp_path / 'o2'}"]) == 2
    assert "nothing to label" in capsys.readouterr().err


def test_select_command_and_its_errors(tmp_path, capsys):
    pool = make_shapes_dataset(tmp_path / "shapes", 24, size=16, seed=0) / "images"
    out = tmp_path / "sel"
    assert main(["select", f"images={pool}", "n=4", f"out={out}", "progress=false"]) == 0
    assert len(list((out / "images").iterdir())) == 4 and "label them" in capsys.readouterr().out
    assert main(["select", f"images={pool}", "n=5", f"out={out}", "progress=false"]) == 0  # own output: redone
    assert len(list((out / "images").iterdir())) == 5
    picked = [p.stem for p in (out / "images").iterdir()]
    shutil.copyfile(pool.parent / "masks" / f"{picked[0]}.png", out / "masks" / f"{picked[0]}.png")
    for args, message in (
        ([f"out={out}"], "already holds masks"),
        (["n=25", f"out={tmp_path / 'a'}"], "n=25 but images=.* holds 24 images"),
        (["n=0", f"out={tmp_path / 'b'}"], "n=0: pick at least 1"),
        ([f"out={pool / 'sub'}"], "lies inside the input images="),
    ):
        assert main(["select", f"images={pool}", "progress=false", *args]) == 2
        import re

        assert re.search(message, capsys.readouterr().err), message
    # once labeled, the selection is a labeled folder (data.labeled= / labeled=)
    from autolabel.data.layout import load_labeled, select_labeled

    for stem in picked:
        shutil.copyfile(pool.parent / "masks" / f"{stem}.png", out / "masks" / f"{stem}.png")
    folder = load_labeled(out, None, 16, "segmentation")
    assert sorted(folder.ids) == sorted(picked) and folder.n_classes >= 2
    assert sorted(select_labeled("labeled", str(out), None, "segmentation").stems) == sorted(picked)


@pytest.mark.parametrize("command", ["select", "label"])
def test_help_lists_the_keys(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out  # (YAML quotes the key n: a bare n would read as "no")
    keys = {"select": ("images:", "'n': 16", "embedder: pixels", "lander:", "out:"),
            "label": ("checkpoint:", "images:", "encoder:", "refine_steps: 0", "resize: false")}[command]  # fmt: skip
    for key in keys:
        assert key in text, key


def test_select_with_a_hilander_checkpoint_picks_density_peaks(tmp_path, capsys):
    """`select lander=CKPT`: Hi-LANDER (meta-trained on pixel features of other classes) clusters the pool; each pick
    is the densest member of its cluster, and a pool embedded with another width is refused in one line."""
    import csv as _csv

    from autolabel.config.hilander import HiLanderClusterConfig
    from autolabel.data.pools import FeaturePool, load_feature_pool, save_feature_pool
    from autolabel.hilander.clustering import cluster_features
    from autolabel.selection import embed_pool

    shapes = make_shapes_dataset(tmp_path / "shapes", 72, size=16, seed=0)
    cats = {r["image"][:-4]: int(r["category"]) for r in _csv.DictReader((shapes / "classes.csv").open())}
    emb = load_feature_pool(embed_pool(shapes / "images", out=tmp_path / "all.npz")["path"])
    seen = np.array([cats[i] < 6 for i in emb.ids])
    labels = np.array([cats[i] for i in emb.ids])
    save_feature_pool(tmp_path / "seen.npz", FeaturePool(emb.features[seen], labels[seen], emb.ids[seen]))
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in emb.ids[~seen]:
        shutil.copyfile(shapes / "images" / f"{i}.png", pool / f"{i}.png")
    assert main(["fit", "hilander", f"train_features={tmp_path / 'seen.npz'}", "model.hidden=8", "train.k_list=[4]",
                 "train.levels_list=[2]", "trainer.max_epochs=2", "trainer.accelerator=cpu",
                 "trainer.enable_progress_bar=false", f"run.root={tmp_path / 'runs'}"]) == 0  # fmt: skip
    lander = next((tmp_path / "runs" / "hilander").glob("*/hilander/checkpoints/last.ckpt"))
    out = tmp_path / "sel"
    assert main(["select", f"images={pool}", "n=3", f"lander={lander}", "cluster.k=4", f"out={out}",
                 "progress=false", "device=cpu"]) == 0  # fmt: skip
    rows = list(csv.DictReader((out / "selected.csv").open()))
    assert len(rows) == 3 and "hilander" in capsys.readouterr().out  # the method in the printed metrics
    res = cluster_features(lander, out / "pool.npz", HiLanderClusterConfig(k=4))
    ids, clusters, density = list(res["ids"]), np.asarray(res["labels"]), res["columns"]["density"]
    assert len(set(clusters.tolist())) >= 2
    for r in rows[: len(set(clusters.tolist()))]:  # first round: one per cluster, its density peak
        members = np.flatnonzero(clusters == int(r["cluster"]))
        assert ids.index(r["id"]) == members[np.argmax(density[members])]
        assert int(r["cluster_size"]) == len(members)
    wrong = tmp_path / "wrong_width"
    capsys.readouterr()
    assert main(["select", f"images={pool}", "n=3", f"lander={lander}", "image_size=8", f"out={wrong}"]) == 2
    assert "was trained on 768-d features" in capsys.readouterr().err  # 16x16x3 pixels, not 8x8x3


def test_your_own_folders_with_an_oracle_mask_folder(tmp_path, capsys):
    shapes = make_shapes_dataset(tmp_path / "mine", 30, size=16, seed=4)
    test = make_shapes_dataset(tmp_path / "test", 6, size=16, seed=5)
    base = ["run", *LOOP, f"data.images={shapes / 'images'}", f"data.test={test}", "select.oracle=true",
            "until_stage=labeled", f"run.root={tmp_path / 'runs'}"]  # fmt: skip
    assert main(base) == 2  # the oracle needs the ground-truth folder when the data are yours
    assert "select.oracle_masks=DIR" in capsys.readouterr().err
    assert main([*base, f"select.oracle_masks={shapes / 'masks'}"]) == 0
    (run,) = [p for p in (tmp_path / "runs" / "label_loop").iterdir() if p.is_dir()]
    pool = read_json(run / "pool" / "manifest.json")
    assert pool["outputs"]["images"] == str(shapes / "images") and pool["metrics"] == {
        "pool_images": 30,
        "test_images": 6,
    }
    masks = sorted((run / "labeled" / "labeled" / "masks").iterdir())
    assert len(masks) == 6 and all(m.read_bytes() == (shapes / "masks" / m.name).read_bytes() for m in masks)
