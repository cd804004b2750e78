"""AdaBN: BatchNorm statistics re-estimated on unlabeled images (known answers), weights and modes untouched, and the
downstream comparison scoring the adapted nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autolabel.config import TrainerConfig
from autolabel.config.downstream import DownstreamConfig
from autolabel.data.images import ImageFolderDataset, sample_images
from autolabel.data.labeled import LabeledFolder
from autolabel.data.procedural import make_shapes_dataset
from autolabel.engine.checkpoint_io import load_checkpoint
from autolabel.errors import ConfigError, DataError
from autolabel.tasks.adabn import adapt_batchnorm
from autolabel.tasks.compare import compare_training_sets
from autolabel.tasks.segmentation_module import SegmentationModule


def test_adapted_statistics_are_the_images_mean_and_variance():
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1), nn.Dropout(0.5), nn.BatchNorm2d(4))
    net.eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "batches" not in k}
    x = (
        torch.randn(10, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0])[:, None, None]
        + torch.tensor([4.0, -1.0, 0.5])[:, None, None]
    )
    assert adapt_batchnorm(net, x, batch_size=10) == 2
    bn = net[0]
    # one batch with momentum=None: the batch's mean and unbiased variance per channel
    assert torch.allclose(bn.running_mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var((0, 2, 3), unbiased=True), atol=1e-4)
    # the second layer sees the first layer's (train-mode) output: what the adapted net itself feeds it
    with torch.no_grad():
        h = net[1](
            (x - x.mean((0, 2, 3), keepdim=True)) / (x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
        )
    assert torch.allclose(net[3].running_mean, h.mean((0, 2, 3)), atol=1e-4)
    # weights untouched, every module back in its mode, momentum restored
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    assert not any(m.training for m in net.modules()) and bn.momentum == 0.1


def test_batches_average_to_the_whole_set_and_training_mode_is_kept():
    bn = nn.BatchNorm2d(2)
    bn.train()
    x = torch.randn(12, 2, 3, 3) + 2.0
    adapt_batchnorm(bn, x, batch_size=4)  # three equal batches: the cumulative average is the overall mean
    assert torch.allclose(bn.running_mean, x.mean((0, 2, 3)), atol=1e-5) and bn.training


def test_nets_without_batchnorm_and_bad_input():
    conv = nn.Conv2d(1, 1, 1)
    before = conv.weight.clone()
    assert adapt_batchnorm(conv, torch.randn(2, 1, 4, 4)) == 0 and torch.equal(conv.weight, before)
    with pytest.raises(DataError, match="non-empty"):
        adapt_batchnorm(nn.BatchNorm2d(1), torch.zeros(0, 1, 4, 4))
    with pytest.raises(ConfigError, match="batch_size"):
        adapt_batchnorm(nn.BatchNorm2d(1), torch.zeros(2, 1, 4, 4), batch_size=0)


def test_sample_images_draws_a_seeded_subset(tmp_path):
    folder = make_shapes_dataset(tmp_path / "pool", 7, size=8, n_classes_shapes=1, seed=0) / "images"
    ds = ImageFolderDataset(folder, size=8, with_labels=False)
    all_ = sample_images(ds, 100)
    assert all_.shape == (7, 3, 8, 8)
    assert sorted(x.sum().item() for x in all_) == sorted(ds[i][0].sum().item() for i in range(7))  # each image once
    some = sample_images(ds, 4, seed=1)
    assert some.shape == (4, 3, 8, 8) and torch.equal(some, sample_images(ds, 4, seed=1))
    assert not torch.equal(some, sample_images(ds, 4, seed=2))
    with pytest.raises(DataError, match="limit >= 1"):
        sample_images(ds, 0)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_comparison_scores_nets_adapted_to_the_unlabeled_images(tmp_path, one_thread):
    real, synth, test, pool = (
        LabeledFolder(
            make_shapes_dataset(tmp_path / n, k, size=8, n_classes_shapes=1, seed=s), task="segmentation", size=8
        )  # fmt: skip
        for n, k, s in (("real", 4, 0), ("synth", 12, 1), ("test", 6, 2), ("pool", 10, 3))
    )
    images = torch.stack([pool[i]["image"] for i in range(len(pool))])
    cfg = DownstreamConfig(steps=4, val_every=2, batch_size=4, base=4, depth=1, adapt_bn=True,
                           sets=["synthetic", "finetuned"])  # fmt: skip
    tc = TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1)
    with pytest.raises(ConfigError, match="adapt_bn"):
        compare_training_sets("segmentation", real, synth, test, cfg, tc, tmp_path / "none")
    out = compare_training_sets("segmentation", real, synth, test, cfg, tc, tmp_path / "runs", unlabeled=images)
    assert out["metrics"]["synthetic"]["adapt_bn_images"] == 10
    for name, sub in (("synthetic", ""), ("finetuned", "finetune")):
        best = load_checkpoint(tmp_path / "runs" / name / sub / "checkpoints" / "best.ckpt", what="best")
        module = SegmentationModule(**best["hyper_parameters"])
        module.load_state_dict(best["state_dict"])
        stored = {k: v.clone() for k, v in module.state_dict().items() if "running" in k}
        adapt_batchnorm(module, images)  # the chosen checkpoint already holds the statistics of these images
        assert all(torch.allclose(module.state_dict()[k], v, atol=1e-5) for k, v in stored.items()), name
