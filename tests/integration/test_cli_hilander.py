"""`autolabel fit hilander` + `autolabel cluster` end to end on tiny blobs, through the CLI entry point."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

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
    from autolabel.hilander.calibration import CalibrationWarning

    with pytest.warns(CalibrationWarning, match="calibrated on only 2 held-out classes"):  # 6 seen classes: a guess
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
    assert list(rows[0]) == ["id", "cluster", "confidence", "level", "density"]
    assert all(0.0 <= float(r["confidence"]) <= 1.0 and int(r["level"]) >= -1 for r in rows)
    metrics = json.loads((pools / "clusters.metrics.json").read_text())
    assert metrics["hilander"]["pairwise_f"] > 0.8
    assert "kmeans" in metrics["baselines"]
    # what scripts and benchmarks read besides the scores: the tau used, the time per part, each level's kNN
    assert metrics["tau"] > 0 and metrics["tau_source"] and set(metrics["seconds"]) >= {"knn", "gnn", "decode"}
    assert metrics["levels"][0]["nodes"] == 100 and metrics["levels"][0]["knn"]["method"] == "flat"
    captured = capsys.readouterr()
    printed = captured.out
    assert "pairwise_f" in printed
    # a tau calibrated on 2 held-out classes is a rough guess: the clusters other taus give are shown and saved
    assert "clusters by tau on this pool: " in captured.err and "warning" not in captured.err
    assert metrics["tau_ladder"] and {"tau", "clusters"} <= set(metrics["tau_ladder"][0])
    # the tau fit calibrated on held-out classes is stored in the checkpoint and used by default, and says so
    stored = json.loads((run / "hilander" / "calibration.json").read_text())
    assert f"tau={stored['tau']:g} (calibrated by fit" in printed and "only 2 classes, a rough guess" in printed
    assert "only 2 held-out classes" in stored["caution"]
    assert manifest["metrics"]["tau"] == stored["tau"] and (run / "hilander" / "tau_curve.png").is_file()
    assert main(["cluster", f"checkpoint={ckpt}", f"features={pools / 'test.npz'}", f"out={out}", "cluster.k=5",
                 "cluster.tau=0.5"]) == 0  # fmt: skip
    assert "tau=0.5 (cluster.tau given" in capsys.readouterr().out
    # calibrate= recalibrates links and tau on another labeled pool of seen classes
    assert main(["cluster", f"checkpoint={ckpt}", f"features={pools / 'test.npz'}", f"out={out}", "cluster.k=5",
                 f"calibrate={pools / 'train.npz'}", "cluster.tau_candidates=[0.3,0.6]"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"on {pools / 'train.npz'}" in printed and "pairwise_f" in printed

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


# ---------------------------------------------------------------- checkpoints, pools and the embed command


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real Hi-LANDER checkpoint (1 epoch, 16-d blobs) and a real feature-encoder checkpoint (1 epoch, 8-d)."""
    from autolabel.data.arrays import export_class_folders

    root = tmp_path_factory.mktemp("ckpts")
    x, y = make_blob_features(4, 10, 16, spread=0.1, seed=0)
    np.savez(root / "train16.npz", features=x, labels=y)
    assert main(["fit", "hilander", f"train_features={root / 'train16.npz'}", "model.hidden=8", "train.k_list=[3]",
                 "train.levels_list=[1]", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                 "trainer.enable_progress_bar=false", f"run.root={root / 'runs'}"]) == 0  # fmt: skip
    lander = next((root / "runs" / "hilander").glob("*/hilander/checkpoints/last.ckpt"))
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 40, (12, 8, 8)).astype(np.uint8)
    labels = np.repeat(np.arange(3), 4)
    for i, c in enumerate(labels):
        imgs[i, :, 2 * c : 2 * c + 2] = 250  # a bright bar whose column is the class
    images = export_class_folders(imgs, labels, root / "images", progress=False, class_names=["a", "b", "c"])
    assert main(["fit", "classifier", f"train_dir={images}", "classifier.image_size=8", "classifier.channels=1",
                 "classifier.width=4", "classifier.depth=1", "classifier.embed_dim=8", "classifier.batch_size=4",
                 "classifier.val_fraction=0.25", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                 "trainer.enable_progress_bar=false", f"run.root={root / 'runs'}"]) == 0  # fmt: skip
    encoder = next((root / "runs" / "classifier").glob("*/classifier/checkpoints/last.ckpt"))
    return {"root": root, "lander": lander, "encoder": encoder, "images": images}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error line"
    return err[-1]


def test_cluster_pool_with_another_feature_width_is_one_line(trained, tmp_path, capsys):
    x8, _ = make_blob_features(3, 5, 8, seed=1)
    np.savez(tmp_path / "p8.npz", features=x8)
    assert main(["cluster", f"checkpoint={trained['lander']}", f"features={tmp_path / 'p8.npz'}",
                 f"out={tmp_path / 'c.csv'}"]) == 2  # fmt: skip
    err = _error(capsys)
    assert err.startswith("error: ") and "was trained on 16-d features" in err and "p8.npz has 8-d" in err
    assert "embed the pool with the same encoder" in err and not (tmp_path / "c.csv").exists()
    # the labeled calibration pool is checked too
    x16, y16 = make_blob_features(3, 5, 16, seed=1)
    np.savez(tmp_path / "p16.npz", features=x16)
    np.savez(tmp_path / "cal8.npz", features=x8, labels=np.repeat(np.arange(3), 5))
    assert main(["cluster", f"checkpoint={trained['lander']}", f"features={tmp_path / 'p16.npz'}",
                 f"calibrate={tmp_path / 'cal8.npz'}", "cluster.tau_candidates=[0.5]",
                 f"out={tmp_path / 'c.csv'}"]) == 2  # fmt: skip
    assert "cal8.npz has 8-d" in _error(capsys)


def test_checkpoint_of_the_other_kind_or_damaged_is_one_line(trained, tmp_path, capsys):
    x16, _ = make_blob_features(3, 5, 16, seed=1)
    np.savez(tmp_path / "p16.npz", features=x16)
    cluster = ["cluster", f"features={tmp_path / 'p16.npz'}", f"out={tmp_path / 'c.csv'}"]
    assert main([*cluster, f"checkpoint={trained['encoder']}"]) == 2
    assert "is not a Hi-LANDER checkpoint (it holds tasks.classifier)" in _error(capsys)
    assert main(["embed", f"checkpoint={trained['lander']}", f"images={trained['images']}",
                 f"out={tmp_path / 'e.npz'}"]) == 2  # fmt: skip
    assert "is not a feature-encoder checkpoint (it holds hilander.lander)" in _error(capsys)
    # truncated file (a crash while copying) and a complete file whose weights do not fit its hyperparameters
    data = trained["lander"].read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    assert main([*cluster, f"checkpoint={tmp_path / 'cut.ckpt'}"]) == 2
    assert "is not a readable torch checkpoint" in _error(capsys)
    ckpt = torch.load(trained["lander"], map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["model"]["hidden"] = 12
    torch.save(ckpt, tmp_path / "bad.ckpt")
    assert main([*cluster, f"checkpoint={tmp_path / 'bad.ckpt'}"]) == 2
    err = _error(capsys)
    assert "damaged or incompatible Hi-LANDER checkpoint (RuntimeError)" in err and "\n" not in err


def test_cluster_k_larger_than_the_pool_warns_once(trained, tmp_path, capsys):
    x16, _ = make_blob_features(1, 5, 16, seed=1)  # N = 5
    np.savez(tmp_path / "p5.npz", features=x16)
    assert main(["cluster", f"checkpoint={trained['lander']}", f"features={tmp_path / 'p5.npz'}", "cluster.k=10",
                 f"out={tmp_path / 'c.csv'}"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert warned == ["warning: cluster.k: k=10 >= N=5 points; using k=4 (each point has only N-1 others)"]
    assert "5 samples ->" in captured.out


def test_a_degenerate_calibrated_tau_is_replaced_by_the_nearest_usable_one(trained, tmp_path, capsys):
    """A calibrated tau that leaves the pool all singletons (or one cluster) is replaced by the nearest usable tau on
    the pool's own ladder, and the console and metrics say so; `cluster.degenerate=keep` and a given tau keep it."""
    from autolabel.engine.checkpoint_io import load_checkpoint
    from autolabel.hilander.calibration import read_calibration, write_calibration

    ckpt = tmp_path / "high_tau.ckpt"
    ckpt.write_bytes(trained["lander"].read_bytes())
    cal = read_calibration(load_checkpoint(ckpt, "cpu"))
    cal.tau = 1.0  # no link passes: every point a singleton
    write_calibration(ckpt, cal)
    x, y = make_blob_features(4, 10, 16, spread=0.1, seed=1)
    np.savez(tmp_path / "pool.npz", features=x, labels=y)
    base = ["cluster", f"checkpoint={ckpt}", f"features={tmp_path / 'pool.npz'}", "cluster.k=5"]

    assert main([*base, f"out={tmp_path / 'a.csv'}"]) == 0
    err = capsys.readouterr().err
    m = json.loads((tmp_path / "a.metrics.json").read_text())
    assert m["calibrated_tau"] == 1.0 and m["tau"] < 1.0 and "replaced by the nearest usable tau" in m["tau_source"]
    assert m["hilander"]["n_clusters"] < 0.9 * len(x) and m["tau"] in [r["tau"] for r in m["tau_ladder"]]
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "40 of 40 points are singletons at tau=1" in warned[0]
    assert f"reclustered at tau={m['tau']:g}" in warned[0] and "clusters by tau on this pool: " in err

    for keep in ("cluster.degenerate=keep", "cluster.tau=1.0"):
        assert main([*base, keep, f"out={tmp_path / 'b.csv'}"]) == 0
        err = capsys.readouterr().err
        m = json.loads((tmp_path / "b.metrics.json").read_text())
        assert m["tau"] == 1.0 and m["hilander"]["n_clusters"] == len(x) and "calibrated_tau" not in m
        assert "40 of 40 points are singletons at tau=1" in err and "clusters by tau on this pool: " in err
        assert "Rerun with another tau (e.g. cluster.tau=" in err and "the nearest usable one" in err


def test_use_gpu_true_without_a_gpu_is_one_line(trained, tmp_path, capsys, monkeypatch):
    import faiss

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    x16, _ = make_blob_features(2, 5, 16, seed=1)
    np.savez(tmp_path / "p.npz", features=x16)
    assert main(["cluster", f"checkpoint={trained['lander']}", f"features={tmp_path / 'p.npz'}",
                 "cluster.knn.use_gpu=true", f"out={tmp_path / 'c.csv'}"]) == 2  # fmt: skip
    assert "use_gpu=true but faiss sees no GPU" in _error(capsys)


def test_embed_writes_a_pool_matching_embed_folder(trained, tmp_path, capsys):
    from autolabel.data.pools import load_feature_pool
    from autolabel.tasks.classifier_module import embed_folder

    out = tmp_path / "pool.npz"
    assert main(["embed", f"checkpoint={trained['encoder']}", f"images={trained['images']}", f"out={out}",
                 "batch_size=5", "device=cpu"]) == 0  # fmt: skip
    assert f"embedded 12 images -> 8-d features: {out}" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as z:
        feats, ids, labels = z["features"], z["ids"], z["labels"]
        assert z["class_names"].tolist() == ["a", "b", "c"]
    assert feats.dtype == np.float32 and feats.shape == (12, 8)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert ids.dtype.kind == "U" and ids[0] == "a/000000" and labels.tolist() == np.repeat(np.arange(3), 4).tolist()
    ref = embed_folder(trained["encoder"], trained["images"], tmp_path / "ref.npz", batch_size=12, progress=False)
    pool = load_feature_pool(ref["path"])
    assert np.allclose(pool.features, feats, atol=1e-6) and pool.ids.tolist() == ids.tolist()


def test_assign_new_samples_to_a_clustered_run(trained, tmp_path, capsys):
    x, _ = make_blob_features(3, 8, 16, spread=0.1, seed=5)
    ids = np.array([f"p{i}" for i in range(len(x))])
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "pool.npz", features=x, ids=ids)
    assert main(["cluster", f"checkpoint={trained['lander']}", f"features={run / 'pool.npz'}",
                 f"out={run / 'clusters.csv'}", "cluster.k=3"]) == 0  # fmt: skip
    new = np.concatenate([x[:2] + 0.01, -x[:1]])  # two near pool samples, one opposite to everything
    np.savez(tmp_path / "new.npz", features=new, ids=np.array(["n0", "n1", "n2"]))
    out = tmp_path / "assigned.csv"
    assert main(["assign", f"checkpoint={trained['lander']}", f"clusters={run}", f"features={tmp_path / 'new.npz'}",
                 f"out={out}", "k=3", "tau=0.5"]) == 0  # fmt: skip
    assert "3 samples:" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    clusters = {r["id"]: r["cluster"] for r in csv.DictReader((run / "clusters.csv").open())}
    assert [r["id"] for r in rows] == ["n0", "n1", "n2"]
    for r in rows:
        assert 0.0 <= float(r["confidence"]) <= 1.0 and r["outcome"] in ("existing", "new")
        if r["outcome"] == "existing":
            assert float(r["confidence"]) > 0.5 and r["cluster"] == clusters[r["nearest"]]
        else:
            assert r["cluster"].startswith("new-")
    assert main(["assign", f"checkpoint={trained['lander']}", f"clusters={run / 'clusters.csv'}",
                 f"features={tmp_path / 'new.npz'}"]) == 2  # fmt: skip
    assert "pool=FEATURES.npz" in _error(capsys)


def test_fit_without_validation_pool_keeps_the_console_clean(pools, capfd):
    # no val_features: the empty validation loader is deliberate, so Lightning's "Total length of `list` across ranks
    # is zero" notice must not reach the console
    import warnings

    args = [a for a in _fit_args(pools) if not a.startswith("val_features")]
    args = [a if not a.startswith("trainer.max_epochs") else "trainer.max_epochs=2" for a in args]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        assert main(args) == 0
    out = capfd.readouterr()
    assert not any("across ranks is zero" in str(w.message) for w in seen)
    assert "across ranks is zero" not in out.out + out.err
