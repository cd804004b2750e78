"""The feature encoder: embedding shapes/norms, learning, checkpoint round trip, embed_folder, errors."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from autolabel.config.classifier import ClassifierConfig
from autolabel.data.arrays import export_class_folders
from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.tasks.classifier import ClassifierDataModule, EmbeddingNet, augment
from autolabel.tasks.classifier_module import ClassifierModule, embed_folder, load_classifier

TINY = dict(image_size=8, channels=1, width=4, depth=2, embed_dim=8, batch_size=16, lr=1e-2, val_fraction=0.25)


def _trainer(tmp_path, steps: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                      num_sanity_val_steps=0)  # fmt: skip


def _class_folder(tmp_path, n_per: int = 6, size: int = 8, seed: int = 0):
    """3 classes of greyscale images: a bright vertical bar whose column is the class, plus noise."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for c in range(3):
        for _ in range(n_per):
            im = rng.integers(0, 30, (size, size)).astype(np.uint8)
            im[:, 2 * c : 2 * c + 2] = 250
            imgs.append(im)
            labels.append(c)
    return export_class_folders(np.stack(imgs), np.array(labels), tmp_path / "cls", progress=False,
                                class_names=["bar0", "bar1", "bar2"])  # fmt: skip


@pytest.mark.parametrize("head", ["cosine", "linear"])
def test_embeddings_unit_norm_any_size_and_gradients(head):
    torch.manual_seed(0)
    net = EmbeddingNet(n_classes=5, channels=3, width=4, depth=2, embed_dim=12, head=head)
    for shape in ((2, 3, 16, 16), (3, 3, 13, 21)):  # any input size via adaptive pooling
        e = net.embed(torch.randn(shape))
        assert e.shape == (shape[0], 12)
        assert torch.allclose(e.norm(dim=1), torch.ones(shape[0]), atol=1e-5)
    x = torch.randn(4, 3, 9, 9)
    logits = net(x)
    assert logits.shape == (4, 5)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    assert net.stem[0].weight.grad.abs().sum() > 0


def test_cosine_head_logits_are_bounded_by_scale():
    net = EmbeddingNet(n_classes=3, channels=1, width=4, depth=1, embed_dim=6, head="cosine", scale=5.0)
    assert net(torch.randn(7, 1, 8, 8)).abs().max() <= 5.0 + 1e-4


def test_few_steps_lower_the_loss_and_checkpoint_round_trip(tmp_path):
    folder = _class_folder(tmp_path)
    cfg = ClassifierConfig(**TINY, augment=True, label_smoothing=0.1)
    pl.seed_everything(0, verbose=False)
    dm = ClassifierDataModule(folder, cfg)
    assert dm.classes == ["bar0", "bar1", "bar2"] and len(dm.train_idx) + len(dm.val_idx) == 18
    module = ClassifierModule(cfg, n_classes=len(dm.classes), class_names=dm.classes)
    x = torch.stack([dm.dataset[i][0] for i in range(18)])
    y = torch.as_tensor(dm.dataset.labels)
    module.eval()
    with torch.no_grad():
        before = F.cross_entropy(module.net(x), y).item()
    trainer = _trainer(tmp_path, steps=10)
    trainer.fit(module, dm)
    module.eval()
    with torch.no_grad():
        after = F.cross_entropy(module.net(x), y).item()
    assert after < 0.5 * before, (before, after)
    for key in ("train/loss", "train/acc", "val/acc"):
        assert key in trainer.callback_metrics
    ckpt = tmp_path / "enc.ckpt"
    trainer.save_checkpoint(ckpt)
    for loaded in (load_classifier(ckpt), ClassifierModule.load_from_checkpoint(ckpt).eval()):
        assert loaded.hparams["class_names"] == ["bar0", "bar1", "bar2"]
        with torch.no_grad():
            assert torch.allclose(loaded(x), module(x), atol=1e-5)


def test_embed_folder_round_trip(tmp_path):
    folder = _class_folder(tmp_path, n_per=3)
    torch.manual_seed(0)
    module = ClassifierModule(ClassifierConfig(**TINY), n_classes=3, class_names=["bar0", "bar1", "bar2"])
    info = embed_folder(module, folder, tmp_path / "out" / "pool.npz", batch_size=4, progress=False)
    assert info["n"] == 9 and info["dim"] == 8 and info["path"].endswith("pool.npz")
    with np.load(info["path"], allow_pickle=False) as z:
        feats, ids, labels, names = z["features"], z["ids"], z["labels"], z["class_names"]
    assert feats.dtype == np.float32 and feats.shape == (9, 8)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ids.tolist()[:2] == ["bar0/000000", "bar0/000001"] and names.tolist() == ["bar0", "bar1", "bar2"]
    again = embed_folder(module, folder, tmp_path / "pool2.npz", batch_size=9, progress=False)
    with np.load(again["path"]) as z:
        assert np.allclose(z["features"], feats, atol=1e-6)  # eval mode: batch size does not matter


def test_augment_keeps_shape_and_is_a_shift():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 6, 7)
    out = augment(x, hflip=True)
    assert out.shape == x.shape
    assert torch.equal(augment(x, pad=0), x)  # no padding, no flip: identity


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_classifier(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"definitely not torch")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_classifier(tmp_path / "junk.ckpt")
    torch.save({"hyper_parameters": {"kind": "hilander.lander"}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a feature-encoder checkpoint"):
        load_classifier(tmp_path / "other.ckpt")
    module = ClassifierModule(ClassifierConfig(**TINY), n_classes=3)
    hp = dict(module.hparams)
    torch.save({"hyper_parameters": hp, "state_dict": {"net.stem.0.weight": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="damaged or incompatible"):
        load_classifier(tmp_path / "bad.ckpt")


def test_config_and_data_errors(tmp_path):
    with pytest.raises(ConfigError, match="classifier.head"):
        ClassifierConfig(head="arcface")
    with pytest.raises(ConfigError, match="val_fraction"):
        ClassifierConfig(val_fraction=1.0)
    with pytest.raises(ConfigError, match="label_smoothing"):
        ClassifierConfig(label_smoothing=1.5)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        ClassifierConfig(lr=0.0)
    with pytest.raises(DataError, match=">= 2 training classes"):
        ClassifierModule(ClassifierConfig(**TINY), n_classes=1)
    one = export_class_folders(np.zeros((2, 8, 8), np.uint8), np.zeros(2, int), tmp_path / "one", progress=False)
    with pytest.raises(DataError, match=">= 2 classes"):
        ClassifierDataModule(one, ClassifierConfig(**TINY))


def test_config_is_omegaconf_structured():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(ClassifierConfig)
    merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["width=8", "head=linear"]))
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj, ClassifierConfig) and obj.width == 8 and obj.head == "linear"
    assert ClassifierModule(merged, n_classes=2).cfg.width == 8  # a DictConfig is accepted too
