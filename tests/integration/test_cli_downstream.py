"""Downstream checks through the CLI on tiny procedural folders: `fit keypoints` (real and synthetic training labels,
PCK/NME, bad inputs) and `fit segmentation task=depth`."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch

from autolabel.data.labeled import FolderSubset, LabeledFolder, holdout_split, write_labeled_folder
from autolabel.data.procedural import make_shapes_dataset
from autolabel.engine.io import read_json
from autolabel.errors import DataError
from pipelines.cli import main

COMMON = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]
KP = ["size=16", "base=8", "depth=2", "lr=3e-3", "sigma=1.0", "batch_size=8"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core test machines: intra-op threads only add contention at these sizes
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root / "train", 24, size=16, seed=0)
    make_shapes_dataset(root / "test", 8, size=16, seed=1)
    return root


def _tiny_synthesis(out, task, n=6, **kw):
    """A real `synthesize` output from an untrained tiny generator (images 8 px, ensemble on a 4 px working grid;
    the labels are written at the 8 px image resolution)."""
    from autolabel.gan import Generator
    from autolabel.handsoff.hypercolumns import HypercolumnExtractor
    from autolabel.handsoff.label_generator import LabelGeneratorEnsemble
    from autolabel.handsoff.synthesis import synthesize

    torch.manual_seed(0)
    g = Generator(resolution=8, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32).eval()
    ext = HypercolumnExtractor(g, resolution=4)
    ens = LabelGeneratorEnsemble(ext.channels, task, n_members=2, hidden=(8, 4), **kw).eval()
    synthesize(g, ens, ext, n, out, batch_size=n, filter_fraction=0.0, progress=False)
    return out


def _only_run(root, name):
    runs = [p for p in (root / name).iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def test_fit_keypoints_end_to_end_beats_untrained(shapes, tmp_path):
    from autolabel.config.downstream import KeypointNetConfig
    from autolabel.tasks.keypoints import evaluate_keypoints
    from autolabel.tasks.keypoints_module import KeypointModule

    args = ["fit", "keypoints", f"train={shapes / 'train'}", f"test={shapes / 'test'}", *KP, "max_epochs=6",
            "flip_pairs=[[2,3]]", *COMMON, f"run.root={tmp_path}"]  # fmt: skip
    assert main(args) == 0
    run = _only_run(tmp_path, "keypoints")
    man = read_json(run / "keypoints" / "manifest.json")
    m = man["metrics"]
    assert man["status"] == "done" and m == read_json(run / "summary.json")
    assert 0.0 <= m["pck@0.1"] <= 1.0 and 0.0 < m["nme"] < 1.0
    assert all(0.0 <= m[f"pck_kp{i}"] <= 1.0 for i in range(4))
    # 2 of the 8 test images (val_fraction=0.2) pick the epoch, the other 6 are scored
    assert (m["n_keypoints"], m["train_images"], m["test_images"], m["val_images"]) == (4, 24, 6, 2)
    ckpt = run / "keypoints" / "checkpoints" / "best.ckpt"
    assert ckpt.is_file() and man["outputs"]["checkpoint"] == str(ckpt)
    assert 0 <= m["best_epoch"] < 6 and m["val_score"] == pytest.approx(
        min(float(r["val/nme"]) for r in csv.DictReader(open(run / "keypoints" / "logs" / "metrics.csv"))
            if r.get("val/nme"))
    )  # fmt: skip

    # the checkpoint is the scored model (on the held-out rest), and training helped: it beats untrained nets
    test = FolderSubset(LabeledFolder(shapes / "test", task="keypoints", size=16), holdout_split(8, 0.2)[1])
    trained = KeypointModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert evaluate_keypoints(trained.model, test)["nme"] == pytest.approx(m["nme"], rel=1e-5)
    untrained = []
    for seed in range(3):
        torch.manual_seed(seed)
        untrained.append(
            evaluate_keypoints(KeypointModule(KeypointNetConfig(base=8, depth=2), n_keypoints=4).model, test)["nme"]
        )
    assert m["nme"] < 0.8 * float(np.mean(untrained))
    with open(run / "keypoints" / "logs" / "metrics.csv") as f:
        val_loss = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]
    assert len(val_loss) == 6 and val_loss[-1] < val_loss[0]
    assert "flip_pairs:" in (run / "config.yaml").read_text()


def test_fit_keypoints_on_synthetic_labels(shapes, tmp_path):
    synth = _tiny_synthesis(tmp_path / "synth", "keypoints", n=6, n_keypoints=4)
    assert json.loads((synth / "plan.json").read_text())["task"] == "keypoints"
    assert main(["fit", "keypoints", f"train={synth}", f"test={shapes / 'test'}", "size=8", "base=4", "depth=2",
                 "max_epochs=1", *COMMON, f"run.root={tmp_path / 'runs'}"]) == 0  # fmt: skip
    m = read_json(_only_run(tmp_path / "runs", "keypoints") / "summary.json")
    assert (m["train_images"], m["test_images"], m["n_keypoints"]) == (6, 6, 4)
    assert 0.0 <= m["pck@0.1"] <= 1.0 and math.isfinite(m["nme"])


def test_synthetic_keypoints_are_rescaled_from_the_working_resolution(tmp_path):
    from autolabel.data.layout import open_labeled

    write_labeled_folder(tmp_path, np.zeros((2, 8, 8, 3), np.uint8), "depth", np.ones((2, 8, 8)))  # images/ only
    shutil.rmtree(tmp_path / "depth")
    (tmp_path / "labels").mkdir()
    for i, conf in enumerate((0.9, 0.1)):
        pts = [{"x": 3.0, "y": 0.0, "confidence": 0.9}, {"x": 1.5, "y": 3.0, "confidence": conf}]
        (tmp_path / "labels" / f"{i:06d}.json").write_text(json.dumps({"resolution": 4, "keypoints": pts}))
    with pytest.raises(DataError, match="no manifest.jsonl"):
        open_labeled(tmp_path, "keypoints", size=16)
    (tmp_path / "manifest.jsonl").write_text('{"id": "000000"}\n{"id": "000001"}\n')
    ds = open_labeled(tmp_path, "keypoints", size=16, min_confidence=0.5)
    assert ds.task == "keypoints" and len(ds) == 2 and ds.n_keypoints == 2
    assert ds[0]["image"].shape == (3, 16, 16)
    assert ds[0]["keypoints"].tolist() == [[13.5, 1.5], [7.5, 13.5]]  # (x, y) -> (x + .5) * 16 / 4 - .5 (centres)
    assert ds[1]["visible"].tolist() == [True, False] and ds[1]["keypoints"][1].tolist() == [-1.0, -1.0]


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err  # one line, no traceback
    return err


def test_fit_keypoints_bad_inputs(shapes, tmp_path, capsys):
    base = ["fit", "keypoints", f"train={shapes / 'train'}", *KP, "max_epochs=1", *COMMON, f"run.root={tmp_path}"]
    # a test folder without keypoints.csv
    no_kp = tmp_path / "no_kp"
    shutil.copytree(shapes / "test" / "images", no_kp / "images")
    err = _error(capsys, [*base, f"test={no_kp}"])
    assert f"test={no_kp} has no keypoints.csv" in err and "images/ + keypoints.csv" in err
    # a test folder with another keypoint count
    two = LabeledFolder(shapes / "test", task="keypoints")
    imgs = np.stack([((t["image"].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy() for t in two])
    write_labeled_folder(tmp_path / "two", imgs, "keypoints", np.stack([t["keypoints"][:2].numpy() for t in two]))
    err = _error(capsys, [*base, f"test={tmp_path / 'two'}"])
    assert "train has 4 keypoints per image but test has 2" in err and "same keypoints in the same order" in err
    # a missing folder, a synthetic dataset of another task, bad flip pairs
    err = _error(capsys, [*base, f"test={tmp_path / 'nowhere'}"])
    assert "folder not found" in err and "test=" in err
    seg = _tiny_synthesis(tmp_path / "seg_synth", "segmentation", n=2, n_classes=2)
    err = _error(capsys, ["fit", "keypoints", f"train={seg}", f"test={shapes / 'test'}", *COMMON])
    assert "synthetic segmentation dataset" in err and "autolabel fit segmentation" in err
    err = _error(capsys, [*base, f"test={shapes / 'test'}", "flip_pairs=[[2,9]]"])
    assert "index 9 out of range for 4 keypoints" in err
    err = _error(capsys, [*base, f"test={shapes / 'test'}", "flip_pairs=[[1,1]]"])
    assert "pairs of distinct keypoint indices" in err
    err = _error(capsys, ["fit", "keypoints", f"test={shapes / 'test'}"])
    assert "'train' is not set" in err
    assert not (tmp_path / "keypoints").exists()  # every failure came before a run directory was made


def test_fit_depth_end_to_end_on_real_and_synthetic(shapes, tmp_path):
    synth = _tiny_synthesis(tmp_path / "synth", "depth", n=4)
    for train in (shapes / "train", synth):
        assert main(["fit", "segmentation", "task=depth", f"train={train}", f"test={shapes / 'test'}", "size=16",
                     "base=4", "depth=2", "max_epochs=1", *COMMON, f"run.root={tmp_path / 'runs'}",
                     "run.resume=never"]) == 0  # fmt: skip
    runs = sorted(p for p in (tmp_path / "runs" / "segmentation").iterdir() if p.is_dir())
    assert len(runs) == 2
    for run, n_train in zip(runs, (24, 4)):
        man = read_json(run / "segmentation" / "manifest.json")
        m = man["metrics"]
        assert set(m) >= {"rmse", "rmse_log", "abs_rel", "sq_rel"} and "miou" not in m
        assert all(math.isfinite(m[k]) and m[k] >= 0 for k in ("rmse", "rmse_log", "abs_rel", "sq_rel"))
        assert (m["train_images"], m["test_images"], m["val_images"]) == (n_train, 6, 2)
        assert man["outputs"]["checkpoint"].endswith("best.ckpt") and (run / "segmentation" / "checkpoints" /
                                                                        "last.ckpt").is_file()  # fmt: skip
    # the synthetic depth dataset cannot be used as keypoint or mask labels
    with pytest.raises(Exception, match="synthetic depth dataset"):
        from autolabel.data.layout import open_labeled

        open_labeled(synth, "keypoints", 16)


def test_unmerged_synthetic_folder_is_refused_and_val_fraction_zero_scores_everything(shapes, tmp_path, capsys):
    synth = _tiny_synthesis(tmp_path / "synth", "segmentation", n=4, n_classes=2)
    (synth / "manifest.jsonl").unlink()  # as after a crash before the merge: labels/ holds unfiltered candidates
    base = ["fit", "segmentation", f"test={shapes / 'test'}", "size=16", "base=4", "depth=2", "max_epochs=1", *COMMON,
            f"run.root={tmp_path / 'runs'}", "run.resume=never"]  # fmt: skip
    err = _error(capsys, [*base, f"train={synth}"])
    assert "has no manifest.jsonl" in err and "rerun `autolabel synthesize` with the same out=" in err
    assert main([*base, f"train={shapes / 'train'}", "val_fraction=0"]) == 0
    m = read_json(_only_run(tmp_path / "runs", "segmentation") / "summary.json")  # the failure made no run directory
    assert (m["test_images"], m["val_images"]) == (8, 0)  # no selection: the final weights on the whole test set
    err = _error(capsys, [*base, f"train={shapes / 'train'}", "val_fraction=1.0"])
    assert "val_fraction=1.0 must be in [0, 1)" in err


def test_synthetic_segmentation_reads_only_kept_samples(shapes, tmp_path):
    from autolabel.data.labeled import SyntheticLabels
    from autolabel.data.layout import open_labeled

    synth = _tiny_synthesis(tmp_path / "synth", "segmentation", n=4, n_classes=2)
    kept = [json.loads(line)["id"] for line in (synth / "manifest.jsonl").read_text().splitlines()]
    shutil.copy(synth / "images" / f"{kept[0]}.png", synth / "images" / "99999999.png")  # a stray candidate
    shutil.copy(synth / "labels" / f"{kept[0]}.png", synth / "labels" / "99999999.png")
    ds = open_labeled(synth, "segmentation", size=8)
    assert ds.ids == kept and ds[0]["mask"].shape == (8, 8)
    assert SyntheticLabels.__module__ == "autolabel.data.labeled"


def test_fit_segmentation_trains_with_the_downstream_augmentation(shapes, tmp_path, monkeypatch):
    import autolabel.tasks.compare as compare

    calls, real = [], compare.augment

    def spy(ds, task, seed=0, flip_pairs=None, photometric=True):
        calls.append((task, photometric))
        return real(ds, task, seed, flip_pairs, photometric)

    monkeypatch.setattr(compare, "augment", spy)
    base = ["fit", "segmentation", f"train={shapes / 'train'}", f"test={shapes / 'test'}", "size=16", "base=4",
            "depth=2", "max_epochs=1", *COMMON, "run.resume=never"]  # fmt: skip
    assert main([*base, f"run.root={tmp_path / 'a'}"]) == 0
    assert main([*base, f"run.root={tmp_path / 'b'}", "photometric=false"]) == 0
    assert calls == [("segmentation", True), ("segmentation", False)]  # the pipeline's policy; the key switches it
