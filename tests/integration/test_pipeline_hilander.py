"""`autolabel run pipeline=hilander` on a tiny slice of the bundled digits: every stage, resume, forced reruns."""

from __future__ import annotations

import csv
import json

import pytest

from autolabel.engine.io import read_json
from pipelines.cli import main

TINY = [
    "pipeline=hilander", "data.source=digits", "data.per_class=24", "classifier.max_epochs=1",
    "classifier.model.image_size=8", "classifier.model.width=8", "classifier.model.depth=1",
    "classifier.model.embed_dim=16", "hilander.max_epochs=3", "hilander.model.hidden=16",
    "hilander.train.k_list=[5]", "hilander.train.levels_list=[2]", "hilander.cluster.k=5",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "progress=false",
]  # fmt: skip


def _run_dir(root):
    runs = [p for p in (root / "hilander").iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def test_pipeline_runs_resumes_and_reruns(tmp_path, capsys):
    args = ["run", *TINY, f"run.root={tmp_path}"]
    assert main(args) == 0
    run = _run_dir(tmp_path)
    for stage in ("data", "classifier", "embed", "hilander", "cluster"):
        assert read_json(run / stage / "manifest.json")["status"] == "done"
    rows = list(csv.DictReader((run / "cluster" / "clusters.csv").open()))
    assert len(rows) == 5 * 24 and list(rows[0])[:2] == ["id", "cluster"] and "confidence" in rows[0]
    # tau was calibrated at fit on held-out classes, stored in the checkpoint, and used by the cluster stage
    calibration = read_json(read_json(run / "hilander" / "manifest.json")["outputs"]["calibration"])
    cluster_metrics = read_json(run / "cluster" / "manifest.json")["metrics"]
    assert cluster_metrics["tau"] == calibration["tau"] and "calibrated by fit" in cluster_metrics["tau_source"]
    summary = read_json(run / "summary.json")
    assert 0.0 <= summary["pairwise_f"] <= 1.0 and "kmeans" in summary["baselines"]
    assert (run / "report" / "report.html").is_file() and (run / "cluster" / "cluster_gallery.png").is_file()
    captured = capsys.readouterr()
    assert "report:" in captured.out and "pairwise_f" in captured.out
    assert "hi-lander levels" not in captured.err  # progress=false: no progress bars, the cluster stage's included
    # 2 of the 5 seen classes held out: the tau is called a rough guess and the clusters per tau are shown and kept
    assert calibration["n_classes"] == 2 and "a rough guess" in cluster_metrics["tau_source"]
    assert "warning" not in cluster_metrics  # a useful clustering: the ladder is advice here, not a rescue
    assert cluster_metrics["tau_ladder"] and "[cluster] clusters by tau on this pool: " in captured.out

    # rerun: everything is up to date
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    stages = read_json(run / "summary.json")["stages"]
    assert {v["status"] for v in stages.values()} == {"skipped"}

    # a clustering-only change is a new config -> new run directory; pin the old one to rerun only `cluster`
    assert main([*args, f"run.dir={run}", "hilander.cluster.tau=0.5"]) == 0
    stages = read_json(run / "summary.json")["stages"]
    assert stages["cluster"]["status"] == "ran" and stages["hilander"]["status"] == "skipped"
    # this tiny model leaves every point a singleton at 0.5: a given tau is kept, and the stage says what would do
    metrics = read_json(run / "cluster" / "manifest.json")["metrics"]
    assert metrics["tau"] == 0.5 and "singletons at tau=0.5" in metrics["warning"] and metrics["tau_ladder"]
    printed = capsys.readouterr().out
    assert "[cluster] warning: " in printed and "[cluster] clusters by tau on this pool: " in printed

    # from_stage forces the stage and its dependents (a control key: same run directory without pinning)
    assert main([*args, "hilander.cluster.tau=0.5", "from_stage=hilander"]) == 0
    assert _run_dir(tmp_path) == run
    stages = read_json(run / "summary.json")["stages"]
    assert stages["hilander"]["status"] == "ran" and stages["embed"]["status"] == "skipped"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["pipeline=hilandr"], "did you mean 'hilander'"),
        (["data.source=folders"], "data.train_dir=DIR"),
        (["data.train_classes=[1,2]", "data.pool_classes=[2,3]"], "share [2]"),
        (["from_stage=nope"], "has no stage 'nope'"),
    ],
)
def test_pipeline_config_errors(tmp_path, extra, message, capsys):
    assert main(["run", *TINY, f"run.root={tmp_path}", *extra]) == 2
    assert message in capsys.readouterr().err


def test_report_command(tmp_path, capsys):
    assert main(["run", *TINY, f"run.root={tmp_path}", "until_stage=data"]) == 0
    run = _run_dir(tmp_path)
    assert not (run / "classifier" / "manifest.json").exists()
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert json.loads((run / "data" / "manifest.json").read_text())["metrics"]["pool_images"] == 120


def test_bring_your_own_features_skips_the_encoder(tmp_path):
    import numpy as np

    from autolabel.data.synthetic import make_blob_features

    x, y = make_blob_features(8, 20, 16, spread=0.1, seed=0)
    np.savez(tmp_path / "train.npz", features=x[:80], labels=y[:80])
    np.savez(tmp_path / "pool.npz", features=x[80:], labels=y[80:])
    args = ["run", "pipeline=hilander", "data.source=features", f"data.train_features={tmp_path / 'train.npz'}",
            f"data.pool_features={tmp_path / 'pool.npz'}", "hilander.max_epochs=3", "hilander.model.hidden=16",
            "hilander.train.k_list=[5]", "hilander.train.levels_list=[2]", "hilander.cluster.k=5",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "progress=false",
            f"run.root={tmp_path / 'runs'}"]  # fmt: skip
    assert main(args) == 0
    run = _run_dir(tmp_path / "runs")
    assert "skipped" in read_json(run / "classifier" / "manifest.json")["metrics"]
    rows = list(csv.DictReader((run / "cluster" / "clusters.csv").open()))
    assert len(rows) == 80
    assert 0.0 <= read_json(run / "summary.json")["nmi"] <= 1.0


def test_features_source_needs_both_files(tmp_path, capsys):
    assert main(["run", "pipeline=hilander", "data.source=features", f"run.root={tmp_path}"]) == 2
    assert "data.train_features" in capsys.readouterr().err
