"""Downstream dense tasks: loss known answers, and floors -- a net trained on tiny real data must beat the constant
baseline computed from its training labels (per-pixel majority class, mean depth map, mean keypoint shape)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from autolabel.config.downstream import KeypointNetConfig, SegmentationNetConfig
from autolabel.data.labeled import LabeledFolder
from autolabel.data.procedural import make_shapes_dataset
from autolabel.metrics.dense import confusion_matrix, depth_errors, miou, nme, pck
from autolabel.tasks.keypoints import evaluate_keypoints
from autolabel.tasks.keypoints_module import KeypointModule
from autolabel.tasks.segmentation import DenseDataModule, evaluate_depth, evaluate_segmentation
from autolabel.tasks.segmentation_module import SegmentationModule


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _Const(nn.Module):
    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


def test_depth_loss_is_l1_to_the_target():
    m = SegmentationModule(SegmentationNetConfig("depth", base=4, depth=1))
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    m.model = _Const(pred)
    depth = torch.tensor([[[[2.0, 2.0], [0.0, 8.0]]]])
    loss, out = m._loss({"image": torch.zeros(1, 3, 2, 2), "depth": depth})
    assert loss.item() == pytest.approx((1 + 0 + 3 + 4) / 4)
    assert torch.equal(out, pred)
    loss0, _ = m._loss({"image": torch.zeros(1, 3, 2, 2), "depth": pred.clone()})
    assert loss0.item() == 0.0


def test_segmentation_loss_is_cross_entropy():
    m = SegmentationModule(SegmentationNetConfig(base=4, depth=1), n_classes=2)
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1, 0, 0] = math.log(3.0)  # pixel 0: p(class 1) = 3/4 ; pixel 1: 1/2
    m.model = _Const(logits)
    loss, _ = m._loss({"image": torch.zeros(1, 3, 1, 2), "mask": torch.tensor([[[1, 0]]])})
    assert loss.item() == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2, rel=1e-6)


def test_keypoint_loss_is_soft_argmax_l1_over_visible_keypoints():
    m = KeypointModule(KeypointNetConfig(base=4, depth=1, sigma=1.0, heatmap_weight=0.0), n_keypoints=2)
    kp = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    out = torch.full((1, 2, 3, 3), -1e4)
    out[0, 0, 1, 1] = 0.0  # keypoint 0 decodes exactly at (1, 1)
    out[0, 1, 0, 0] = 0.0  # keypoint 1 decodes at (0, 0): |dx| + |dy| = 2 pixels off in a 3-pixel image
    m.model = _Const(out)
    batch = {"image": torch.zeros(1, 3, 3, 3), "keypoints": kp, "visible": torch.tensor([[True, True]])}
    loss, pred = m._loss(batch)
    assert pred[0].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert loss.item() == pytest.approx((0.0 + 2.0 / 3.0) / 2, rel=1e-5)
    batch["visible"] = torch.tensor([[True, False]])
    assert m._loss(batch)[0].item() == pytest.approx(0.0, abs=1e-7)
    # the heatmap term adds a positive cross-entropy on top (the one-hot maps are not the Gaussian targets)
    m2 = KeypointModule(KeypointNetConfig(base=4, depth=1, sigma=1.0, heatmap_weight=0.1), n_keypoints=2)
    m2.model = _Const(out)
    assert m2._loss(batch)[0].item() > 0.0


def _trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0)  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("floors")
    make_shapes_dataset(root / "train", 48, size=16, seed=0, n_classes_shapes=1)
    make_shapes_dataset(root / "test", 16, size=16, seed=1, n_classes_shapes=1)
    return root


def test_segmentation_net_beats_the_majority_class_map(shapes):
    train = LabeledFolder(shapes / "train", task="segmentation", size=16)
    test = LabeledFolder(shapes / "test", task="segmentation", size=16, n_classes=train.n_classes)
    masks = torch.stack([train[i]["mask"] for i in range(len(train))])
    k = train.n_classes
    majority = torch.nn.functional.one_hot(masks.long(), k).sum(0).argmax(-1)  # per-pixel majority class [H, W]
    gts = torch.stack([test[i]["mask"] for i in range(len(test))])
    base_miou, _ = miou(confusion_matrix(majority.expand_as(gts), gts, k))
    torch.manual_seed(0)
    module = SegmentationModule(SegmentationNetConfig(base=8, depth=2, lr=1e-2), n_classes=k)
    _trainer(60).fit(module, datamodule=DenseDataModule(shapes / "train", task="segmentation", size=16, batch_size=8,
                                                        val_fraction=0.0, augment=False))  # fmt: skip
    got = evaluate_segmentation(module, test)["miou"]
    assert got > base_miou + 0.1, (got, base_miou)


def test_depth_net_beats_the_mean_depth_map(shapes):
    train = LabeledFolder(shapes / "train", task="depth", size=16)
    test = LabeledFolder(shapes / "test", task="depth", size=16)
    mean_map = torch.stack([train[i]["depth"] for i in range(len(train))]).mean(0)
    gts = torch.stack([test[i]["depth"] for i in range(len(test))])
    base = depth_errors(mean_map.expand_as(gts), gts)["rmse"]
    torch.manual_seed(0)
    module = SegmentationModule(SegmentationNetConfig("depth", base=8, depth=2, lr=5e-2))
    _trainer(150).fit(module, datamodule=DenseDataModule(shapes / "train", task="depth", size=16, batch_size=8,
                                                        val_fraction=0.0, augment=False))  # fmt: skip
    got = evaluate_depth(module, test)["rmse"]
    assert got < 0.9 * base, (got, base)


def test_keypoint_net_beats_the_mean_shape(shapes):
    train = LabeledFolder(shapes / "train", task="keypoints", size=16)
    test = LabeledFolder(shapes / "test", task="keypoints", size=16)
    mean_shape = torch.stack([train[i]["keypoints"] for i in range(len(train))]).mean(0)
    gts = torch.stack([test[i]["keypoints"] for i in range(len(test))])
    vis = torch.stack([test[i]["visible"] for i in range(len(test))])
    norm = torch.full((len(test),), math.hypot(16, 16))
    base = nme(mean_shape.expand_as(gts), gts, norm, vis)
    base_pck = pck(mean_shape.expand_as(gts), gts, norm, 0.1, vis)
    torch.manual_seed(0)
    module = KeypointModule(KeypointNetConfig(base=8, depth=2, lr=1e-2), n_keypoints=train.n_keypoints)
    _trainer(80).fit(module, datamodule=DenseDataModule(shapes / "train", task="keypoints", size=16, batch_size=8,
                                                        val_fraction=0.0, augment=False))  # fmt: skip
    got = evaluate_keypoints(module.model, test)
    assert got["nme"] < base and got["pck@0.1"] >= base_pck, (got, base, base_pck)


def test_metric_edge_cases_found_by_mutation_testing():
    # class index bounds: n_classes itself is out of range, n_classes - 1 is in
    assert confusion_matrix(torch.tensor([1]), torch.tensor([1]), 2).tolist() == [[0, 0], [0, 1]]
    for pred, gt in ((torch.tensor([2]), torch.tensor([0])), (torch.tensor([0]), torch.tensor([2]))):
        with pytest.raises(Exception, match="class index outside"):
            confusion_matrix(pred, gt, 2)
    # one pixel: accuracy is defined
    from autolabel.metrics.dense import pixel_accuracy

    assert pixel_accuracy(torch.tensor([[1, 0], [0, 0]])) == 1.0
    # keypoint distances are differences (non-zero ground truth), per-image norms below 1 are valid, two images
    gt = torch.tensor([[[2.0, 2.0]], [[10.0, 0.0]]])
    pred = torch.tensor([[[2.3, 2.4]], [[10.0, 3.0]]])  # distances 0.5 and 3
    norm = torch.tensor([0.5, 10.0])
    assert nme(pred, gt, norm) == pytest.approx((1.0 + 0.3) / 2)
    assert pck(pred, gt, norm) == pytest.approx(0.0)  # default threshold 0.1: 1.0 and 0.3 both above
    assert pck(pred, gt, norm, threshold=0.3) == pytest.approx(0.5)
    # both maps are clamped to [1e-3, 80]: a ground truth beyond the range is compared at the bound
    e = depth_errors(torch.tensor([80.0, 1e-3]), torch.tensor([500.0, -4.0]))
    assert e["rmse"] == pytest.approx(0.0, abs=1e-6) and e["abs_rel"] == pytest.approx(0.0, abs=1e-4)
    e2 = depth_errors(torch.tensor([2.0]), torch.tensor([100.0]), max_depth=10.0)
    assert (
        e2["rmse"] == pytest.approx(8.0) and e2["abs_rel"] == pytest.approx(0.8) and e2["sq_rel"] == pytest.approx(6.4)
    )


def test_undefined_metrics_are_nan():
    from autolabel.metrics.dense import pixel_accuracy

    assert math.isnan(miou(torch.zeros(2, 2, dtype=torch.long))[0])
    assert math.isnan(pixel_accuracy(torch.zeros(2, 2, dtype=torch.long)))
    kp, vis = torch.zeros(1, 2, 2), torch.zeros(1, 2, dtype=torch.bool)
    assert math.isnan(pck(kp, kp, torch.ones(1), visible=vis)) and math.isnan(nme(kp, kp, torch.ones(1), vis))
