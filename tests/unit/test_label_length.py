"""The label generator's length chosen on held-out labeled images: scores, folds and the choice (known answers)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from autolabel.config.labelgen import LabelTrainConfig
from autolabel.errors import ConfigError
from autolabel.gan import Generator
from autolabel.handsoff.hypercolumns import HypercolumnExtractor
from autolabel.handsoff.label_generator_module import LabelTargets
from autolabel.handsoff.length import HeldOutCurve, choose_length, final_steps, fold_indices, heldout_score

R = 8


class Stub(nn.Module):
    """An 'ensemble' whose prediction depends on the pixel position only (rows arrive in flat y*R+x order when one
    chunk covers the image), so every held-out score has a known answer."""

    def __init__(self, task: str, out: torch.Tensor) -> None:
        super().__init__()
        self.task, self.out = task, out

    def predict(self, x):
        assert x.shape[0] == R * R
        return {"segmentation": {"label": self.out.flatten()}, "keypoints": {"heatmap": self.out.flatten(0, 1)},
                "depth": {"depth": self.out.flatten()}}[self.task]  # fmt: skip


@pytest.fixture(scope="module")
def ext():
    torch.manual_seed(0)
    g = Generator(resolution=8, z_dim=16, w_dim=16, n_mapping=1, channel_base=32, channel_max=8).eval()
    return HypercolumnExtractor(g, resolution=R)


def ws_for(ext, n):
    return torch.randn(n, ext.generator.num_ws, ext.generator.w_dim)


def test_segmentation_score_is_the_pooled_miou(ext):
    labels = torch.zeros(1, R, R, dtype=torch.long)
    labels[:, :, :4] = 1  # left half is class 1
    pred = torch.zeros(R, R, dtype=torch.long)
    pred[:4] = 1  # the stub says: top half is class 1
    t = LabelTargets(labels, "segmentation", R, n_classes=2, min_class_pixels=0)
    stub = Stub("segmentation", pred).train()
    # class 1: I = 16 (top-left), U = 48; class 0: I = 16 (bottom-right), U = 48
    assert heldout_score(stub, ext, ws_for(ext, 1), t) == pytest.approx(1 / 3)
    assert stub.training  # put back in the mode it was in
    # a class absent from labels and predictions does not count; a perfect answer scores 1
    t3 = LabelTargets(labels, "segmentation", R, n_classes=3, min_class_pixels=0)
    assert heldout_score(Stub("segmentation", labels[0]), ext, ws_for(ext, 1), t3) == pytest.approx(1.0)


def test_keypoint_score_is_minus_the_mean_error_over_visible_points(ext):
    ys, xs = torch.meshgrid(torch.arange(R).float(), torch.arange(R).float(), indexing="ij")
    heat = torch.exp(-((xs - 5) ** 2 + (ys - 2) ** 2) / 2.0)  # a Gaussian peak at (x, y) = (5, 2)
    out = torch.stack([heat, heat], -1)  # [R, R, K=2]
    kps = torch.tensor([[[5.0, 6.0], [0.0, 0.0]]])  # the second one is invisible
    t = LabelTargets(kps, "keypoints", R, image_resolution=R, visible=torch.tensor([[True, False]]))
    assert heldout_score(Stub("keypoints", out), ext, ws_for(ext, 1), t) == pytest.approx(-4 / R, abs=1e-4)


def test_depth_score_is_minus_the_rmse(ext):
    depth = torch.zeros(2, R, R)
    depth[1] = 3.0
    t = LabelTargets(depth, "depth", R)
    # errors 1 on image 0 and 2 on image 1: RMSE = sqrt((1 + 4) / 2)
    assert heldout_score(Stub("depth", torch.ones(R, R)), ext, ws_for(ext, 2), t) == pytest.approx(-math.sqrt(2.5))


def test_subset_keeps_the_settings_and_slices_the_images():
    kps = torch.arange(12.0).view(3, 2, 2)
    t = LabelTargets(kps, "keypoints", R, image_resolution=R, heatmap_sigma=1.5)
    s = t.subset(torch.tensor([2, 0]))
    assert len(s) == 2 and s.heatmap_sigma == 1.5 and s.n_outputs == 2
    assert torch.equal(s.labels, t.labels[[2, 0]]) and torch.equal(s.visible, t.visible[[2, 0]])
    assert len(t) == 3  # the original is untouched


def test_folds_are_disjoint_cover_every_image_and_follow_the_seed():
    folds = fold_indices(10, 4, seed=3)
    assert sorted(len(f) for f in folds) == [2, 2, 3, 3]
    assert sorted(torch.cat(folds).tolist()) == list(range(10))
    assert [f.tolist() for f in folds] == [f.tolist() for f in fold_indices(10, 4, seed=3)]
    assert [f.tolist() for f in folds] != [f.tolist() for f in fold_indices(10, 4, seed=4)]
    with pytest.raises(ConfigError, match="at least 4 labeled images"):
        fold_indices(3, 4)
    with pytest.raises(ConfigError, match=">= 2 folds"):
        fold_indices(10, 1)


def test_bad_settings_fail_in_one_line():
    with pytest.raises(ConfigError, match="select_folds=1"):
        LabelTrainConfig(select_folds=1)
    with pytest.raises(ConfigError, match="select_every=0"):
        LabelTrainConfig(select_every=0)


CURVES = [{50: 0.5, 100: 0.7, 150: 0.6}, {50: 0.6, 100: 0.6, 150: 0.7}, {50: 0.4, 100: 0.8, 150: 0.8}]


def fake_trainer(calls):
    def train_fold(index, callback, fold_dir):
        assert isinstance(callback, HeldOutCurve) and len(callback.targets) == 6 - len(index)
        calls.append(sorted(index.tolist()))
        callback.curve.update(CURVES[int(fold_dir.name[4:])])
        return 10  # steps per epoch of the fold

    return train_fold


def test_choice_is_the_best_mean_step_earliest_on_ties_and_survives_a_restart(tmp_path):
    t = LabelTargets(torch.zeros(6, R, R, dtype=torch.long), "segmentation", R, n_classes=2)
    ws, calls, lines = torch.zeros(6, 1, 1), [], []
    choice = choose_length(fake_trainer(calls), ws, t, 3, 50, tmp_path, 0, lines.append)
    # mean curve: 50 -> 0.5, 100 -> 0.7, 150 -> 0.7: the earliest of the tie
    assert (choice.step, choice.score, choice.epochs) == (100, pytest.approx(0.7), pytest.approx(10.0))
    assert final_steps(choice, 12) == 120 and final_steps(choice, 1) == 10
    assert len(calls) == 3 and sorted(sum(calls, [])) == sorted(list(range(6)) * 2)  # each image trains 2 folds
    assert len(lines) == 3 and "fold 3/3" in lines[-1]
    # a restart reads the finished folds' curves; an interrupted fold is trained again from scratch
    (tmp_path / "fold1" / "curve.json").unlink()
    (tmp_path / "fold1" / "partial.ckpt").write_text("x")
    calls.clear()
    again = choose_length(fake_trainer(calls), ws, t, 3, 50, tmp_path, 0, lines.append)
    assert len(calls) == 1 and not (tmp_path / "fold1" / "partial.ckpt").exists()
    assert (again.step, again.epochs) == (choice.step, choice.epochs)
