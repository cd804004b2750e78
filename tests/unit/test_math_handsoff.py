"""Known answers for HandsOff's math: JS divergence and the image score on hand-made member distributions, the
ensemble's vote/uncertainty/losses, and hypercolumns that equal the generator's own block outputs (with non-zero noise
weights, so noise content matters) at known positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autolabel.gan import Generator
from autolabel.handsoff.hypercolumns import HypercolumnExtractor, pixel_xy
from autolabel.handsoff.label_generator import LabelGeneratorEnsemble, image_uncertainty, js_divergence
from autolabel.handsoff.synthesis import filter_indices, filter_plan


def _h(p) -> float:
    return -sum(v * math.log(v) for v in p if v > 0)


def test_js_divergence_on_hand_made_members():
    # members [.5, .5] and [1, 0]: H([.75, .25]) - (ln 2 + 0) / 2
    two = torch.tensor([[[0.5, 0.5]], [[1.0, 0.0]]])
    assert js_divergence(two).item() == pytest.approx(_h([0.75, 0.25]) - math.log(2) / 2, abs=1e-6)
    # three one-hot members over three classes: H(uniform) = ln 3
    three = torch.eye(3)[:, None, :]
    assert js_divergence(three).item() == pytest.approx(math.log(3), abs=1e-6)
    # two of [.9, .1, 0] and one [.2, .3, .5]: by hand
    m = torch.tensor([[[0.9, 0.1, 0.0]], [[0.9, 0.1, 0.0]], [[0.2, 0.3, 0.5]]])
    mean = [(0.9 * 2 + 0.2) / 3, (0.1 * 2 + 0.3) / 3, 0.5 / 3]
    want = _h(mean) - (2 * _h([0.9, 0.1]) + _h([0.2, 0.3, 0.5])) / 3
    assert js_divergence(m).item() == pytest.approx(want, abs=1e-6)
    # per pixel: agreement -> 0, disagreement -> > 0 (shape [M, P, K] -> [P])
    both = torch.cat([torch.tensor([[[0.3, 0.7]], [[0.3, 0.7]]]), two], dim=1)
    out = js_divergence(both)
    assert out.shape == (2,) and out[0].item() == pytest.approx(0.0, abs=1e-6) and out[1] > 0.1


def test_image_score_is_the_mean_of_the_top_ten_percent():
    s = torch.zeros(2, 30)
    s[0, :3] = torch.tensor([3.0, 2.0, 1.0])  # top 3 of 30 -> (3 + 2 + 1) / 3
    s[1, 10] = 9.0
    assert image_uncertainty(s).tolist() == pytest.approx([2.0, 3.0])
    assert image_uncertainty(s, top_fraction=0.05).tolist() == pytest.approx([2.5, 4.5])  # ceil(1.5) = 2 pixels
    assert image_uncertainty(torch.tensor([[5.0, 1.0]])).item() == pytest.approx(5.0)  # at least one pixel


def test_filter_keeps_the_middle_of_the_uncertainty_ranking():
    plan = filter_plan(90, filter_fraction=0.1, drop_least_uncertain=30)
    assert plan == {"n": 90, "n_total": 100, "drop_least": 1, "drop_most": 9}
    scores = np.arange(100)[::-1].astype(float)  # candidate i has score 99 - i
    kept = filter_indices(scores, 90, 1)
    # drop the least uncertain (i=99, score 0) and the 9 most uncertain (i=0..8)
    assert kept.tolist() == list(range(9, 99))


def _ensemble_with_fixed_members(logits: list[list[float]]) -> LabelGeneratorEnsemble:
    ens = LabelGeneratorEnsemble(1, task="segmentation", n_classes=len(logits[0]), n_members=len(logits), hidden=(2, 2))
    for m, row in zip(ens.members, logits):  # each member outputs constant logits = its last layer's bias
        last = m.net[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(row))
    return ens.eval()


def test_ensemble_vote_probs_uncertainty_known_answer():
    ens = _ensemble_with_fixed_members([[0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    pred = ens.predict(torch.randn(4, 1))
    assert pred["label"].tolist() == [1, 1, 1, 1]  # 2 votes for class 1, 1 for class 0
    probs = torch.tensor([[0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0]]).softmax(-1)
    torch.testing.assert_close(pred["probs"], probs.mean(0).expand(4, 3))
    torch.testing.assert_close(pred["uncertainty"], js_divergence(probs[:, None]).expand(4))
    out = ens(torch.randn(5, 1))
    losses = ens.member_losses(out, torch.zeros(5, dtype=torch.long))
    want = [-math.log(float(p[0])) for p in probs]
    assert losses.tolist() == pytest.approx(want, rel=1e-5)


def test_depth_and_keypoint_member_losses_known_answer():
    ens = LabelGeneratorEnsemble(1, task="depth", n_members=2, hidden=(2, 2))
    out = torch.tensor([[[1.0], [3.0]], [[2.0], [2.0]]])  # [M=2, P=2, 1]
    tgt = torch.tensor([2.0, 2.0])
    assert ens.member_losses(out, tgt, "l1").tolist() == pytest.approx([1.0, 0.0])
    assert ens.member_losses(out, tgt, "l2").tolist() == pytest.approx([1.0, 0.0])
    kp = LabelGeneratorEnsemble(1, task="keypoints", n_keypoints=2, n_members=1, hidden=(2, 2))
    o = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])  # [1, P=2, K=2]
    t = torch.tensor([[0.0, 0.0], [0.5, 1.0]])
    assert kp.member_losses(o, t).tolist() == pytest.approx([(1 + 0 + 0 + 1) / 4])
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # keypoint 1 invisible
    assert kp.member_losses(o, t, weight=w).tolist() == pytest.approx([1 / 2])


def _noisy_generator() -> Generator:
    torch.manual_seed(0)
    g = Generator(resolution=16, z_dim=16, w_dim=16, n_mapping=2, channel_base=64, channel_max=32).eval()
    for mod in g.modules():
        if mod.__class__.__name__ == "NoiseInjection":
            nn.init.constant_(mod.weight, 0.7)  # trained generators use their noise; untrained ones have weight 0
    return g


def _block_outputs(g: Generator, ws: torch.Tensor) -> list[torch.Tensor]:
    """The generator's feature maps read with forward hooks on its own blocks (not through return_features)."""
    got: list[torch.Tensor] = []
    hooks = [g.input.register_forward_hook(lambda m, i, o: got.append(o.detach().clone()))]
    for blk in [g.conv1, *g.convs]:
        hooks.append(blk.register_forward_hook(lambda m, i, o: got.append(o.detach().clone())))
    with torch.no_grad():
        g.synthesis(ws, noise_mode="const")
    for h in hooks:
        h.remove()
    return got


@pytest.mark.parametrize("res", [16, 8])
def test_hypercolumns_are_the_generators_block_features(res):
    g = _noisy_generator()
    torch.manual_seed(1)
    ws = g.mapping(torch.randn(2, 16))[:, None].repeat(1, g.num_ws, 1)
    blocks = _block_outputs(g, ws)
    assert [b.shape[1] for b in blocks] == list(g.feature_channels)
    ext = HypercolumnExtractor(g, resolution=res)
    idx = torch.tensor([0, 3, res + 2, res * res - 1])
    cols = ext.pixels(ws, idx)  # [B, P, C]
    xy = pixel_xy(idx, res).long()
    want = []
    for f in blocks:
        if f.shape[-1] != res:
            f = F.interpolate(f, size=(res, res), mode="bilinear", align_corners=False)
        want.append(f[:, :, xy[:, 1], xy[:, 0]])  # [B, c, P]
    torch.testing.assert_close(cols, torch.cat(want, 1).transpose(1, 2), atol=1e-5, rtol=1e-5)
    # the noise really enters: zeroing the noise weights changes the hypercolumns, and const noise is deterministic
    torch.testing.assert_close(ext.pixels(ws, idx), cols)
    for mod in g.modules():
        if mod.__class__.__name__ == "NoiseInjection":
            nn.init.zeros_(mod.weight)
    assert (ext.pixels(ws, idx) - cols).abs().max() > 1e-3


def test_hypercolumns_of_selected_layers_in_order():
    g = _noisy_generator()
    ws = g.mapping(torch.randn(1, 16))[:, None].repeat(1, g.num_ws, 1)
    blocks = _block_outputs(g, ws)
    last = len(blocks) - 1
    ext = HypercolumnExtractor(g, layers=[last, 1])  # working resolution = 16 = the last block's size
    dense = ext(ws)
    up1 = F.interpolate(blocks[1], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(dense, torch.cat([blocks[last], up1], 1), atol=1e-5, rtol=1e-5)


def test_edge_cases_found_by_mutation_testing():
    from autolabel.errors import ConfigError
    from autolabel.handsoff.label_generator import keypoint_heatmaps, majority_vote

    # a class no member predicts (mean probability exactly 0) must not turn the score into NaN
    assert js_divergence(torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])).item() == pytest.approx(math.log(2))
    # image-shaped inputs [M, H, W, K]: the class axis is the last one
    probs = torch.zeros(2, 2, 3, 2)
    probs[0, ..., 0] = 1.0
    probs[1, ..., 1] = 1.0
    probs[:, 0, 0] = torch.tensor([0.5, 0.5])
    js = js_divergence(probs)
    assert js.shape == (2, 3) and js[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert js[1, 2].item() == pytest.approx(math.log(2), abs=1e-6)
    votes = torch.tensor([[[0, 1, 1], [2, 2, 0]], [[0, 1, 2], [2, 1, 0]], [[1, 1, 2], [0, 2, 0]]])  # [M=3, H=2, W=3]
    assert majority_vote(votes, 3).tolist() == [[0, 1, 2], [2, 2, 0]]
    # heatmap sigma: any positive value (also below 1) is valid, 0 is not
    hm = keypoint_heatmaps(torch.tensor([[[1.0, 1.0]]]), 3, sigma=0.5)
    assert hm[0, 0, 1, 1].item() == 1.0 and hm[0, 0, 1, 2].item() == pytest.approx(math.exp(-2.0))
    with pytest.raises(ConfigError, match="heatmap_sigma=0"):
        keypoint_heatmaps(torch.tensor([[[1.0, 1.0]]]), 3, sigma=0.0)
    # filtering: n=1 and drop_least_uncertain=0 are valid plans; ties keep the earlier candidates (stable order)
    assert filter_plan(1, filter_fraction=0.5, drop_least_uncertain=0) == {"n": 1, "n_total": 2, "drop_least": 0,
                                                                           "drop_most": 1}  # fmt: skip
    with pytest.raises(ConfigError, match="drop_least_uncertain=-1"):
        filter_plan(5, drop_least_uncertain=-1)
    ties = np.zeros(300)
    assert filter_indices(ties, 200, 20).tolist() == list(range(20, 220))


def test_rescale_from_a_one_pixel_grid_and_fp16_resize():
    from autolabel.handsoff.hypercolumns import rescale_coords

    assert rescale_coords(torch.tensor([[0.0, 0.0]]), 1, 4).tolist() == [[1.5, 1.5]]  # the centre of the image
    ext = HypercolumnExtractor(_noisy_generator(), resolution=8, dtype=torch.float16)
    out = ext.resize_all([torch.ones(1, 2, 4, 4)])
    assert out.dtype == torch.float16 and out.shape == (1, 2, 8, 8)
