"""label_train.hflip: the mirrored copies of the labeled images keep their labels consistent."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from autolabel.config.labelgen import LabelTrainConfig
from autolabel.errors import ConfigError
from autolabel.handsoff.prepare import _mirrored


def test_mirrored_masks_and_keypoints_follow_the_image():
    img = torch.arange(2 * 4 * 5, dtype=torch.float32).view(2, 4, 5)
    mask = torch.zeros(4, 5, dtype=torch.long)
    mask[1, 0] = 1  # left edge
    (seg,) = _mirrored([{"image": img, "mask": mask}], "segmentation", None, None)
    assert torch.equal(seg["image"], img.flip(-1)) and seg["mask"][1, 4] == 1 and seg["mask"].sum() == 1
    kp = torch.tensor([[0.0, 1.0], [4.0, 2.0], [2.0, 3.0]])  # left, right, centre (x, y)
    vis = torch.tensor([True, True, False])
    folder = SimpleNamespace(n_keypoints=3)
    (out,) = _mirrored([{"image": img, "keypoints": kp, "visible": vis}], "keypoints", [[0, 1]], folder)
    # x -> W-1-x for visible points, then left and right swap places (their names stay with the index)
    assert torch.equal(out["keypoints"], torch.tensor([[0.0, 2.0], [4.0, 1.0], [2.0, 3.0]]))
    assert torch.equal(out["visible"], vis)


def test_mirrored_keypoints_need_their_flip_pairs():
    item = {"image": torch.zeros(1, 4, 4), "keypoints": torch.zeros(2, 2), "visible": torch.ones(2, dtype=torch.bool)}
    with pytest.raises(ConfigError, match=r"label_train\.flip_pairs"):
        _mirrored([item], "keypoints", None, SimpleNamespace(n_keypoints=2))
    with pytest.raises(ConfigError, match="out of range"):
        _mirrored([item], "keypoints", [[0, 2]], SimpleNamespace(n_keypoints=2))
    assert len(_mirrored([item], "keypoints", [], SimpleNamespace(n_keypoints=2))) == 1  # [] = symmetric points


@pytest.mark.parametrize("pairs", [[[1, 1]], [[0, 1, 2]], [[-1, 0]], [3], [["a", "b"]]])
def test_flip_pairs_are_validated(pairs):
    with pytest.raises(ConfigError, match=r"label_train\.flip_pairs=.*distinct keypoint"):
        LabelTrainConfig(flip_pairs=pairs)
    assert LabelTrainConfig(flip_pairs=[[0, 1]]).flip_pairs == [[0, 1]]
