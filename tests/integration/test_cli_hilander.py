"""`autolabel fit hilander` + `autolabel cluster` end to end on tiny blobs, through the CLI entry point."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from autolabel.data.synthetic import make_blob_features
from pipelines.cli import main


@pytest.fixture()
def pools(tmp_path):
    x, y = make_blob_features(6, 20, 16, spread=0.1, seed=0)
    np.savez(tmp_path / "train.npz", features=x, labels=y)
    xt, yt = make_blob_features(5, 20, 16, spread=0.1, seed=3)
    np.savez(tmp_path / "test.npz", features=xt, labels=yt, ids=np.array([f"img{i:03d}" for i in range(len(xt))]))
    np.save(tmp_path / "unlabeled.npy", xt)
    return tmp_path


def _fit_args(root):
    return [
        "fit", "hilander", f"train_features={root / 'train.npz'}", f"val_features={root / 'train.npz'}",
        "model.hidden=32", "train.k_list=[5,3]", "train.levels_list=[2,2]", "trainer.max_epochs=25",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", f"run.root={root / 'runs'}",
    ]  # fmt: skip


def test_fit_then_cluster(pools, capsys):
    assert main(_fit_args(pools)) == 0
    runs = list((pools / "runs" / "hilander").iterdir())
    runs = [r for r in runs if r.is_dir()]
    assert len(runs) == 1
    run = runs[0]
    ckpt = run / "hilander" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run / "config.yaml").is_file() and (run / "summary.json").is_file()
    assert (run / "hilander" / "logs" / "metrics.csv").is_file()
    manifest = json.loads((run / "hilander" / "manifest.json").read_text())
    assert manifest["outputs"]["checkpoint"] == str(ckpt)

    out = pools / "clusters.csv"
    assert main(["cluster", f"checkpoint={ckpt}", f"features={pools / 'test.npz'}", f"out={out}",
                 "cluster.k=5", "baselines=[kmeans]"]) == 0  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 100 and rows[0]["id"] == "img000"
    metrics = json.loads((pools / "clusters.metrics.json").read_text())
    assert metrics["hilander"]["pairwise_f"] > 0.8
    assert "kmeans" in metrics["baselines"]
    assert "pairwise_f" in capsys.readouterr().out

    # unlabeled .npy pool: row-order ids, no metrics file
    out2 = pools / "unlabeled.csv"
    assert main(["cluster", f"checkpoint={ckpt}", f"features={pools / 'unlabeled.npy'}", f"out={out2}"]) == 0
    rows2 = list(csv.DictReader(out2.open()))
    assert rows2[0]["id"] == "0" and not (pools / "unlabeled.metrics.json").exists()


def test_rerun_resumes_same_run(pools):
    args = _fit_args(pools)
    args[args.index("trainer.max_epochs=25")] = "trainer.max_epochs=2"
    assert main(args) == 0
    assert main(args) == 0  # same config: reopens the same run dir and continues from last.ckpt
    runs = [r for r in (pools / "runs" / "hilander").iterdir() if r.is_dir()]
    assert len(runs) == 1
    assert (runs[0] / "command.txt").read_text().count("fit hilander") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cluster", "checkpoint=/nope.ckpt", "features=/nope.npz"], "checkpoint not found"),
        (["fit", "hilander", "train_features=/nope.npz"], "feature pool not found"),
        (["fit", "hilander"], "'train_features' is not set"),
        (["fit", "hilander", "train_features=x.npz", "model.hiden=3"], "did you mean 'model.hidden'"),
        (["fit", "hilandr"], "did you mean `autolabel fit hilander`"),
        (["cluster", "checkpoint=a", "features=b", "cluster.tau=2"], "cluster.tau=2.0 must be in"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_fit_needs_labels(pools, capsys):
    assert main(["fit", "hilander", f"train_features={pools / 'unlabeled.npy'}", f"run.root={pools / 'r'}"]) == 2
    assert "has no 'labels' array" in capsys.readouterr().err
