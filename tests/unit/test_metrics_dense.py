import math

import pytest
import torch

from autolabel.errors import DataError
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
