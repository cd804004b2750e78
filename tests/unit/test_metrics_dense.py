import math

import pytest
import torch

from autolabel.errors import ConfigError, DataError
from autolabel.metrics.dense import confusion_matrix, depth_errors, miou, nme, pck, pixel_accuracy


def test_confusion_miou_known_answer():
    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    conf = confusion_matrix(pred, gt, 4)
    # rows gt, cols pred
    assert conf[:3, :3].tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    mean, per = miou(conf)
    # IoU0 = 2/(3+3-2)=0.5, IoU1 = 2/(2+3-2)=2/3, IoU2 = 2/(3+2-2)=2/3; class 3 absent from both -> excluded
    assert per[0] == pytest.approx(0.5) and per[1] == pytest.approx(2 / 3) and per[2] == pytest.approx(2 / 3)
    assert math.isnan(per[3])
    assert mean == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert pixel_accuracy(conf) == pytest.approx(6 / 8)


def test_confusion_ignore_index_and_errors():
    gt = torch.tensor([0, 1, 255])
    pred = torch.tensor([0, 1, 1])
    conf = confusion_matrix(pred, gt, 2, ignore_index=255)
    assert int(conf.sum()) == 2 and miou(conf)[0] == pytest.approx(1.0)
    with pytest.raises(DataError, match="class index outside"):
        confusion_matrix(pred, torch.tensor([0, 1, 5]), 2)
    with pytest.raises(DataError, match="shape"):
        confusion_matrix(pred, torch.tensor([0, 1]), 2)


def test_pck_nme_known_answer():
    gt = torch.zeros(1, 3, 2)
    pred = torch.tensor([[[3.0, 4.0], [0.5, 0.0], [100.0, 0.0]]])  # distances 5, 0.5, 100
    norm = torch.tensor([10.0])
    assert pck(pred, gt, norm, 0.1) == pytest.approx(1 / 3)  # only 0.05 <= 0.1
    assert pck(pred, gt, norm, 0.5) == pytest.approx(2 / 3)
    vis = torch.tensor([[True, True, False]])
    assert pck(pred, gt, norm, 0.1, vis) == pytest.approx(0.5)
    assert nme(pred, gt, norm, vis) == pytest.approx((0.5 + 0.05) / 2)
    with pytest.raises(DataError, match="norm must be"):
        pck(pred, gt, torch.tensor([0.0]))
    with pytest.raises(DataError, match=r"\[N,K,2\]"):
        nme(pred[0], gt[0], norm)


def test_depth_errors_known_answer_and_clamp():
    gt = torch.tensor([1.0, 2.0, 4.0])
    pred = torch.tensor([2.0, 2.0, 2.0])
    e = depth_errors(pred, gt)
    assert e["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    assert e["abs_rel"] == pytest.approx((1 / 1 + 0 + 2 / 4) / 3)
    assert e["sq_rel"] == pytest.approx((1 / 1 + 0 + 4 / 4) / 3)
    assert e["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + 0 + math.log(2) ** 2) / 3))
    # clamping: 200 -> 80 and -1 -> 1e-3
    e2 = depth_errors(torch.tensor([200.0, -1.0]), torch.tensor([80.0, 1e-3]))
    assert e2["rmse"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DataError, match="NaN"):
        depth_errors(torch.tensor([float("nan")]), torch.tensor([1.0]))


def test_mean_iou_metric_matches_the_function_and_skips_ignored_pixels():
    from autolabel.metrics.dense import MeanIoU

    gt = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    m = MeanIoU(4)  # ignore_index 255 by default
    m.update(pred[:1], gt[:1])
    m.update(pred[1:], gt[1:])  # accumulated over batches: the same as one confusion matrix of everything
    assert float(m.compute()) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)  # class 3 absent: left out (NaN)
    assert math.isnan(m.per_class()[3]) and m.pixel_accuracy() == pytest.approx(6 / 8)
    m.reset()
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1]]), 2).permute(0, 2, 1).float()  # [1, 2, 3]
    m2 = MeanIoU(2)
    m2.update(logits, torch.tensor([[0, 1, 255]]))  # logits are argmaxed; the 255 pixel counts nowhere
    assert int(m2.confmat.sum()) == 2 and float(m2.compute()) == pytest.approx(1.0)
    assert math.isnan(float(MeanIoU(2).compute()))  # nothing seen: undefined, not 0


def test_keypoint_norms_and_metric_classes_known_answers():
    from autolabel.metrics.dense import NME, PCK, keypoint_norms

    gt = torch.tensor([[[0.0, 0.0], [4.0, 1.0], [2.0, 9.0]], [[1.0, 1.0], [1.0, 5.0], [0.0, 0.0]]])
    vis = torch.tensor([[True, True, False], [True, True, False]])
    # image 1: visible box 4 x 1 -> sqrt(4) = 2; image 2: box 0 x 4 (collinear) -> max side 4
    assert keypoint_norms(gt, vis, "bbox").tolist() == [2.0, 4.0]
    assert keypoint_norms(gt, vis, "diagonal", (6, 8)).tolist() == [10.0, 10.0]
    io = keypoint_norms(gt, torch.tensor([[True, True, True], [True, False, True]]), "interocular", eyes=[0, 1])
    assert io[0].item() == pytest.approx(math.sqrt(17)) and math.isnan(io[1].item())  # an invisible eye: undefined
    assert math.isnan(keypoint_norms(gt[:, :1], vis[:, :1], "bbox")[0].item())  # one point has no box
    pred = gt.clone()
    pred[0, 0] += torch.tensor([0.3, 0.0])  # 0.3 px off: 0.15 of the bbox norm, 0.03 of the diagonal
    pred[1, 1] += torch.tensor([0.0, 0.1])  # 0.1 px off: 0.025 of the bbox norm
    pck_bbox, nme_bbox = PCK(0.1, "bbox"), NME("bbox")
    for i in range(2):  # two updates = one pass over both images
        pck_bbox.update(pred[i : i + 1], gt[i : i + 1], vis[i : i + 1])
        nme_bbox.update(pred[i : i + 1], gt[i : i + 1], vis[i : i + 1])
    assert float(pck_bbox.compute()) == pytest.approx(3 / 4)
    assert float(nme_bbox.compute()) == pytest.approx((0.15 + 0.025) / 4)
    strict = PCK(0.05, "diagonal")
    strict.update(pred, gt, vis, image_hw=(6, 8))
    assert float(strict.compute()) == 1.0  # 0.03 and 0.01 of the diagonal
    eyes = NME("interocular", eyes=[0, 1])
    eyes.update(pred, gt, torch.tensor([[True, True, True], [True, False, True]]))
    # only image 1 has both eyes: its three keypoints, errors 0.3, 0, 0 over sqrt(17)
    assert float(eyes.compute()) == pytest.approx(0.3 / math.sqrt(17) / 3)
    with pytest.raises(ConfigError, match="eye keypoints"):
        NME("interocular")
    with pytest.raises(ConfigError, match="keypoint norm"):
        PCK(0.1, "face")
