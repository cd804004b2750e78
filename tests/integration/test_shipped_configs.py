"""Every YAML under configs/ runs for real, on a tiny setting: the shipped file supplies its settings, the overrides
only shrink sizes/steps and point at tiny data (and swap GPU-only settings for CPU ones)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from autolabel.config import configs_dir
from autolabel.data.arrays import FASHION_MNIST_ROOT
from autolabel.data.procedural import make_shapes_dataset
from autolabel.data.synthetic import make_blob_features
from autolabel.engine.io import read_json
from autolabel.gan import load_generator
from pipelines.cli import main

CPU = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto", "trainer.precision=32-true",
       "trainer.enable_progress_bar=false"]  # fmt: skip


def _cfg(name: str) -> str:
    return f"config={configs_dir() / name}"


def _manifest(root, name: str, stage: str) -> dict:
    (path,) = list((root / name).glob(f"*/{stage}/manifest.json"))
    return read_json(path)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs")
    x, y = make_blob_features(6, 20, 16, spread=0.1, seed=0)
    np.savez(root / "train.npz", features=x, labels=y)
    return root / "train.npz"


def test_handsoff_chain_gan_encoder_labels(tmp_path):
    """gan/weizmann_horse64.yaml -> handsoff/encoder_64.yaml -> handsoff/labels_segmentation.yaml at 64 px."""
    data = make_shapes_dataset(tmp_path / "shapes", 6, size=64, seed=0)
    runs = tmp_path / "runs"
    assert main(["fit", "gan", _cfg("gan/weizmann_horse64.yaml"), f"images={data / 'images'}", "kimg=0.008",
                 "gan.z_dim=16", "gan.w_dim=16", "gan.channel_base=256", "gan.channel_max=8", "gan_train.batch_size=4",
                 *CPU, f"run.root={runs}"]) == 0  # fmt: skip
    gan = _manifest(runs, "horse64_gan", "gan")
    gen = gan["outputs"]["generator"]
    assert load_generator(gen).resolution == 64  # the shipped file's resolution, not the default
    assert main(["fit", "encoder", _cfg("handsoff/encoder_64.yaml"), f"generator={gen}", f"images={data / 'images'}",
                 "encoder.width=4", "encoder.max_width=8", "encoder_train.phase1_steps=2",
                 "encoder_train.finetune_steps=1", "encoder_train.batch_size=2", "lpips_random=true", *CPU,
                 f"run.root={runs}"]) == 0  # fmt: skip
    enc = _manifest(runs, "encoder64", "encoder")
    assert enc["metrics"]["steps"] == 3
    assert main(["fit", "labels", _cfg("handsoff/labels_segmentation.yaml"), f"generator={gen}",
                 f"encoder={enc['outputs']['checkpoint']}", f"labeled={data}", "refine_steps=1", "lpips_random=true",
                 "label_generator.n_members=2", "label_generator.hidden=[8,4]", "label_generator.min_class_pixels=1",
                 "label_train.max_steps=2", "label_train.pixels_per_image=32", *CPU, f"run.root={runs}"]) == 0  # fmt: skip
    labels = _manifest(runs, "labels", "labels")
    assert labels["metrics"]["labeled_images"] == 6


def test_hilander_large_pool(blobs, tmp_path):
    # (trainer/gpu8_ddp.yaml runs for real, strategy and precision as shipped, in tests/integration/test_ddp.py)
    assert main(["fit", "hilander", _cfg("hilander/large_pool.yaml"), f"train_features={blobs}", "model.hidden=16",
                 "train.k_list=[5,3]", "train.levels_list=[2,2]", "trainer.max_epochs=1", *CPU,
                 f"run.root={tmp_path}"]) == 0  # fmt: skip
    assert _manifest(tmp_path, "hilander", "hilander")["status"] == "done"


WEIZMANN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "weizmann_horse"


@pytest.mark.skipif(not (WEIZMANN / "figure_ground").is_dir(), reason="../shared/data/weizmann_horse is not here")
def test_weizmann_horse_data_config(tmp_path, monkeypatch):
    """configs/data/weizmann_horse.yaml as shipped (its relative paths, from the repository root) on the real photos:
    16 labeled images with their masks, the other 312 as the real test set, all 328 for the GAN."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert main(["run", _cfg("data/weizmann_horse.yaml"), "until_stage=data", "progress=false",
                 f"run.root={tmp_path}"]) == 0  # fmt: skip
    data = _manifest(tmp_path, "weizmann_horse", "data")
    assert data["metrics"] == {"pool_images": 328, "labeled_images": 16, "test_images": 312}
    labeled, test = Path(data["outputs"]["labeled"]), Path(data["outputs"]["test"])
    names = {p.name for p in (labeled / "images").iterdir()}
    assert names == {p.name for p in (labeled / "masks").iterdir()} and len(names) == 16
    assert not names & {p.name for p in (test / "images").iterdir()}  # no labeled image is scored on


def test_sweep_lander_grid(blobs, tmp_path):
    base = (f"base=[train_features={blobs},val_features={blobs},'train.k_list=[4]','train.levels_list=[1]',"
            "trainer.max_epochs=1,trainer.accelerator=cpu,trainer.enable_progress_bar=false]")  # fmt: skip
    assert main(["sweep", str(configs_dir() / "sweep" / "lander_grid.yaml"), base, f"root={tmp_path}"]) == 0
    rows = list(csv.DictReader((tmp_path / "lander_grid" / "results.csv").open()))
    assert len(rows) == 4 and all(r["returncode"] == "0" for r in rows)
    # ranked by the clustering quality users get on the validation pool, best first
    scores = [float(r["val/pairwise_f"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= v <= 1.0 for v in scores)


@pytest.mark.skipif(not (Path(FASHION_MNIST_ROOT) / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist is not installed here")  # fmt: skip
def test_fashion_mnist_experiment(tmp_path):
    assert main(["run", _cfg("experiment/fashion_mnist_hilander.yaml"), "data.per_class=12",
                 "classifier.max_epochs=1", "classifier.model.width=8", "classifier.model.depth=1",
                 "hilander.max_epochs=1", "hilander.model.hidden=16", "hilander.train.k_list=[4]",
                 "hilander.train.levels_list=[1]", "hilander.cluster.k=4", "hilander.baselines=[kmeans]", *CPU,
                 "progress=false", f"run.root={tmp_path}"]) == 0  # fmt: skip
    summary = read_json(next((tmp_path / "fmnist").glob("*/summary.json")))
    assert 0.0 <= summary["nmi"] <= 1.0
