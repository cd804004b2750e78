"""Image folders, array datasets, the feature encoder and embedding."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from autolabel.config.classifier import ClassifierConfig
from autolabel.data.arrays import export_class_folders, load_digits_arrays, load_fashion_mnist, read_idx, select_classes
from autolabel.data.images import ImageFolderDataset, list_images, to_tensor, to_uint8
from autolabel.data.pools import load_feature_pool
from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.tasks.classifier import ClassifierDataModule, EmbeddingNet, augment
from autolabel.tasks.classifier_module import ClassifierModule, embed_folder, load_classifier


def _write_idx(path, arr, code):
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(">u1" if code == 8 else arr.dtype).tobytes())


def test_idx_reader_and_fashion_loader(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs, 8)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 1], np.uint8), 8)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), imgs)
    x, y = load_fashion_mnist(tmp_path, "test")
    assert x.shape == (2, 3, 4) and y.tolist() == [7, 1]
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, "train")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")


def test_digits_select_and_export(tmp_path):
    x, y = load_digits_arrays()
    assert x.shape == (1797, 8, 8) and x.dtype == np.uint8 and x.max() == 255
    xs, ys = select_classes(x, y, [3, 5], per_class=4, seed=0)
    assert sorted(ys.tolist()) == [3] * 4 + [5] * 4
    with pytest.raises(DataError, match="class 42 has no samples"):
        select_classes(x, y, [42])
    out = export_class_folders(xs, ys, tmp_path / "f", progress=False)
    files = list_images(out)
    assert len(files) == 8 and {f.parent.name for f in files} == {"class_003", "class_005"}


def test_image_folder_labels_and_errors(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        Image.fromarray(np.full((5, 7, 3), 200 if cls == "dog" else 10, np.uint8)).save(tmp_path / "d" / cls / "a.png")
    ds = ImageFolderDataset(tmp_path / "d", size=4)
    assert ds.classes == ["cat", "dog"] and ds.ids == ["cat/a", "dog/a"]
    x, y = ds[1]
    assert x.shape == (3, 4, 4) and y == 1 and x.min() > 0.5
    assert np.array_equal(to_uint8(to_tensor(np.full((2, 2, 3), 7, np.uint8))), np.full((2, 2, 3), 7, np.uint8))
    with pytest.raises(DataError, match="image folder not found"):
        list_images(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="accepted extensions"):
        list_images(tmp_path / "empty")
    (tmp_path / "d" / "cat" / "broken.png").write_bytes(b"nope")
    ds2 = ImageFolderDataset(tmp_path / "d", size=4)
    broken = [i for i, f in enumerate(ds2.files) if f.name == "broken.png"][0]
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        ds2[broken]


def test_embedding_net_shapes_and_unit_norm():
    net = EmbeddingNet(3, channels=1, width=4, depth=2, embed_dim=6)
    x = torch.randn(5, 1, 12, 12)
    assert net(x).shape == (5, 3)
    e = net.embed(x)
    assert e.shape == (5, 6) and torch.allclose(e.norm(dim=1), torch.ones(5), atol=1e-5)
    aug = augment(x, hflip=True)
    assert aug.shape == x.shape


def _class_folder(tmp_path, n_per=12, size=8):
    rng = np.random.default_rng(0)
    imgs, labels = [], []
    for c in range(3):
        base = np.zeros((size, size), np.uint8)
        base[:, c * 2 : c * 2 + 3] = 255  # a bar whose position is the class
        for _ in range(n_per):
            imgs.append(np.clip(base + rng.integers(0, 40, (size, size)), 0, 255).astype(np.uint8))
            labels.append(c)
    return export_class_folders(np.stack(imgs), np.array(labels), tmp_path / "cls", progress=False)


def test_classifier_learns_and_embeds(tmp_path):
    folder = _class_folder(tmp_path)
    cfg = ClassifierConfig(image_size=8, channels=1, width=8, depth=2, embed_dim=16, batch_size=12, lr=5e-3,
                           val_fraction=0.25, augment=False)  # fmt: skip
    pl.seed_everything(0, verbose=False)
    dm = ClassifierDataModule(folder, cfg)
    module = ClassifierModule(cfg, n_classes=len(dm.classes), class_names=dm.classes)
    trainer = pl.Trainer(max_epochs=25, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, dm)
    assert float(trainer.callback_metrics["val/acc"]) >= 0.9
    ckpt = tmp_path / "c.ckpt"
    trainer.save_checkpoint(ckpt)
    info = embed_folder(ckpt, folder, tmp_path / "pool.npz", batch_size=7, progress=False)
    assert info["n"] == 36 and info["dim"] == 16
    pool = load_feature_pool(tmp_path / "pool.npz")
    assert pool.labels.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    assert pool.ids[0] == "class_000/000000"
    assert np.load(tmp_path / "pool.npz")["class_names"].tolist() == ["class_000", "class_001", "class_002"]
    # same-class embeddings are closer than other-class ones: every nearest neighbour shares the class
    sims = pool.features @ pool.features.T
    np.fill_diagonal(sims, -2)
    assert (pool.labels[sims.argmax(1)] == pool.labels).all()
    assert isinstance(load_classifier(ckpt), ClassifierModule)


def test_classifier_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_classifier(tmp_path / "x.ckpt")
    torch.save({"hyper_parameters": {"kind": "hilander.lander"}, "state_dict": {}}, tmp_path / "h.ckpt")
    with pytest.raises(CheckpointError, match="not a feature-encoder checkpoint"):
        load_classifier(tmp_path / "h.ckpt")
    with pytest.raises(ConfigError, match="classifier.channels"):
        ClassifierConfig(channels=2)
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="class subfolder"):
        ClassifierDataModule(tmp_path / "flat", ClassifierConfig())
