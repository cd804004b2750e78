import math

import pytest
import pytorch_lightning as pl
import torch

from autolabel.config.downstream import KeypointNetConfig, SegmentationNetConfig
from autolabel.data.labeled import LabeledFolder
from autolabel.data.procedural import make_shapes_dataset
from autolabel.errors import ConfigError
from autolabel.tasks.keypoints import KeypointNet, decode_heatmaps, evaluate_keypoints, render_heatmaps
from autolabel.tasks.keypoints_module import KeypointModule
from autolabel.tasks.segmentation import DenseDataModule, UNet, evaluate_depth, evaluate_segmentation, flip_item
from autolabel.tasks.segmentation_module import SegmentationModule


def _trainer(steps, **kw):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine is shared: intra-op threads only add contention at these sizes
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root / "train", 48, size=16, seed=0)
    make_shapes_dataset(root / "val", 12, size=16, seed=1)
    # figure/ground version (one shape class, like Weizmann horses) for the mIoU check
    make_shapes_dataset(root / "fg_train", 48, size=16, seed=0, n_classes_shapes=1)
    make_shapes_dataset(root / "fg_val", 12, size=16, seed=1, n_classes_shapes=1)
    return root


@pytest.mark.parametrize("hw", [(16, 16), (13, 10)])
def test_unet_shapes_and_gradients(hw):
    torch.manual_seed(0)
    net = UNet(3, 4, base=4, depth=2)
    x = torch.randn(2, 3, *hw, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 4, *hw)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ConfigError, match="UNet needs"):
        UNet(3, 0)


def test_segmentation_module_learns(shapes):
    torch.manual_seed(0)
    dm = DenseDataModule(shapes / "fg_train", shapes / "fg_val", task="segmentation", size=16, batch_size=8)
    dm.setup()
    assert dm.n_classes == 2
    module = SegmentationModule(SegmentationNetConfig(base=8, depth=2, lr=1e-2), n_classes=dm.n_classes)
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        before = module._loss(batch)[0].item()
    trainer = _trainer(40, num_sanity_val_steps=0, val_check_interval=40, check_val_every_n_epoch=None)
    trainer.fit(module, datamodule=dm)
    module.eval()
    with torch.no_grad():
        after = module._loss(batch)[0].item()
    assert after < 0.5 * before
    assert "val/miou" in trainer.callback_metrics
    res = evaluate_segmentation(module, LabeledFolder(shapes / "fg_val", task="segmentation", size=16))
    assert res["miou"] > 0.5 and len(res["per_class_iou"]) == 2 and 0 <= res["pixel_acc"] <= 1


def test_depth_module_and_evaluate(shapes):
    torch.manual_seed(0)
    dm = DenseDataModule(shapes / "train", None, task="depth", size=16, batch_size=8, val_fraction=0.25)
    module = SegmentationModule(SegmentationNetConfig("depth", base=4, depth=2, lr=3e-3))
    trainer = _trainer(20, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert "val/rmse" in trainer.callback_metrics
    res = evaluate_depth(module, LabeledFolder(shapes / "val", task="depth", size=16))
    assert set(res) == {"rmse", "rmse_log", "abs_rel", "sq_rel"} and all(math.isfinite(v) for v in res.values())
    with pytest.raises(ConfigError, match="needs a depth folder"):
        evaluate_depth(module, LabeledFolder(shapes / "val", task="segmentation", size=16))
    with pytest.raises(ConfigError, match="use segmentation or depth"):
        SegmentationModule(SegmentationNetConfig("keypoints"))


def test_checkpoint_round_trip(shapes, tmp_path):
    module = SegmentationModule(SegmentationNetConfig(base=4, depth=2), n_classes=5)
    dm = DenseDataModule(shapes / "train", shapes / "val", size=16, batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = SegmentationModule.load_from_checkpoint(path)
    x = torch.randn(1, 3, 16, 16)
    module.eval()
    loaded.eval()
    assert torch.allclose(module(x), loaded(x))


def test_decode_heatmaps_known_answer():
    hm = render_heatmaps(torch.tensor([[[5.0, 3.0], [2.5, 7.0]]]), 10, 12, sigma=1.0)
    assert hm.shape == (1, 2, 10, 12) and hm[0, 0, 3, 5] == pytest.approx(1.0)
    out = decode_heatmaps(hm, beta=1.0)
    assert out[0, 0].tolist() == pytest.approx([5.0, 3.0], abs=1e-5)
    # x = 2.5 lies between pixels 2 and 3: refinement moves the argmax (2) towards it, y stays exact
    assert 2.0 < out[0, 1, 0].item() < 3.0 and out[0, 1, 1].item() == pytest.approx(7.0, abs=1e-5)
    # hand-made: two equal peaks at (x=2,y=2) and (3,2), zeros around; softmax weights e^1 and e^0
    hand = torch.zeros(1, 1, 6, 6)
    hand[0, 0, 2, 2] = hand[0, 0, 2, 3] = 1.0
    e = math.e
    assert decode_heatmaps(hand, beta=1.0)[0, 0].tolist() == pytest.approx([(13 + 5 * e) / (7 + 2 * e), 2.0])
    corner = torch.zeros(1, 1, 4, 4)
    corner[0, 0, 0, 0] = 5.0
    assert decode_heatmaps(corner, beta=10.0)[0, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-3)


def test_flip_item_keypoints_and_masks():
    item = {
        "image": torch.arange(12.0).reshape(1, 3, 4),
        "mask": torch.arange(12).reshape(3, 4),
        "keypoints": torch.tensor([[0.0, 1.0], [-1.0, -1.0], [3.0, 2.0]]),
        "visible": torch.tensor([True, False, True]),
    }
    f = flip_item(item)
    assert f["mask"][0].tolist() == [3, 2, 1, 0]
    assert f["keypoints"].tolist() == [[3.0, 1.0], [-1.0, -1.0], [0.0, 2.0]]
    g = flip_item(item, flip_pairs=[(0, 2)])
    assert g["keypoints"].tolist() == [[0.0, 2.0], [-1.0, -1.0], [3.0, 1.0]]


def test_keypoint_module_loss_drops_and_evaluate(shapes):
    torch.manual_seed(0)
    dm = DenseDataModule(shapes / "train", shapes / "val", task="keypoints", size=16, batch_size=8, flip_pairs=[(2, 3)])
    dm.setup()
    module = KeypointModule(KeypointNetConfig(base=8, depth=2, lr=3e-3, sigma=1.0), n_keypoints=4)
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        before = module._loss(batch)[0].item()
    trainer = _trainer(30, num_sanity_val_steps=0, val_check_interval=30, check_val_every_n_epoch=None)
    trainer.fit(module, datamodule=dm)
    module.eval()
    with torch.no_grad():
        after = module._loss(batch)[0].item()
    assert after < before
    assert "val/pck" in trainer.callback_metrics
    res = evaluate_keypoints(module.model, LabeledFolder(shapes / "val", task="keypoints", size=16))
    assert set(res) == {"pck@0.1", "pck@0.05", "nme", "pck_bbox@0.1", "pck_bbox@0.05", "nme_bbox"}
    assert 0 <= res["pck@0.05"] <= res["pck@0.1"] <= 1 and res["nme"] > 0
    assert KeypointNet(3).predict(torch.randn(2, 3, 16, 16)).shape == (2, 3, 2)


def test_segmentation_ignore_index_in_loss_and_validation_metric():
    torch.manual_seed(0)
    module = SegmentationModule(SegmentationNetConfig(base=4, depth=1), n_classes=2)  # ignore_index 255 by default
    img = torch.randn(2, 3, 8, 8)
    mask = torch.randint(0, 2, (2, 8, 8))
    ignored = mask.clone()
    ignored[:, :4] = 255  # the top half is "don't care"
    with torch.no_grad():
        loss, out = module._loss({"image": img, "mask": ignored})
        keep = ignored != 255
        expected = torch.nn.functional.cross_entropy(out.permute(0, 2, 3, 1)[keep], mask[keep])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    module.val_miou.update(out.argmax(1), ignored)
    assert int(module.val_miou.confmat.sum()) == int(keep.sum())  # ignored pixels counted nowhere
    with pytest.raises(ConfigError, match="ignore_index=1 is a real class"):
        SegmentationModule(SegmentationNetConfig(ignore_index=1), n_classes=2)
