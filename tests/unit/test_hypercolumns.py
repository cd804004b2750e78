import pytest
import torch
import torch.nn.functional as F

from autolabel.errors import ConfigError, DataError
from autolabel.gan import Generator
from autolabel.handsoff.hypercolumns import HypercolumnExtractor


def tiny_gen() -> Generator:
    torch.manual_seed(0)
    return Generator(resolution=16, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32).eval()


def ws_for(g, b=2, seed=1):
    torch.manual_seed(seed)
    w = g.mapping(torch.randn(b, g.z_dim))
    return w[:, None].repeat(1, g.num_ws, 1)


def test_width_and_shape():
    g = tiny_gen()
    ext = HypercolumnExtractor(g)
    assert ext.channels == sum(g.feature_channels)
    hc = ext(ws_for(g))
    assert hc.shape == (2, sum(g.feature_channels), 16, 16)
    sub = HypercolumnExtractor(g, resolution=8, layers=[0, 3])
    assert sub.channels == g.feature_channels[0] + g.feature_channels[3]
    assert sub(ws_for(g)).shape == (2, sub.channels, 8, 8)


def test_resize_matches_manual_interpolate():
    g = tiny_gen()
    ws = ws_for(g)
    ext = HypercolumnExtractor(g, resolution=8, layers=[1, 2, len(g.feature_channels) - 1])
    _, feats = g.synthesis(ws, return_features=True)
    manual = torch.cat(
        [F.interpolate(feats[i], size=(8, 8), mode="bilinear", align_corners=False) for i in ext.layers], 1
    )
    torch.testing.assert_close(ext(ws), manual)


@pytest.mark.parametrize("res", [16, 8, 12])
def test_pixels_equal_gather_from_full(res):
    g = tiny_gen()
    ws = ws_for(g)
    ext = HypercolumnExtractor(g, resolution=res)
    full = ext(ws).flatten(2)  # [B, C, R*R]
    idx = torch.tensor([0, 5, res * res - 1, res + 3, 2 * res])
    px = ext.pixels(ws, idx)
    assert px.shape == (2, 5, ext.channels)
    torch.testing.assert_close(px, full[:, :, idx].transpose(1, 2), atol=1e-5, rtol=1e-5)
    # per-image indices
    idx2 = torch.stack([idx, idx.flip(0)])
    px2 = ext.pixels(ws, idx2)
    torch.testing.assert_close(px2[1], full[1][:, idx.flip(0)].T, atol=1e-5, rtol=1e-5)


def test_sample_pixels_deterministic_and_fp16():
    g = tiny_gen()
    ws = ws_for(g)
    ext = HypercolumnExtractor(g, dtype=torch.float16)
    a, ia = ext.sample_pixels(ws, 20, torch.Generator().manual_seed(3))
    b, ib = ext.sample_pixels(ws, 20, torch.Generator().manual_seed(3))
    assert a.dtype == torch.float16 and a.shape == (2, 20, ext.channels)
    assert torch.equal(ia, ib) and torch.equal(a, b)
    assert all(len(set(row.tolist())) == 20 for row in ia)


def test_bad_inputs():
    g = tiny_gen()
    with pytest.raises(ConfigError, match="out of range"):
        HypercolumnExtractor(g, layers=[99])
    ext = HypercolumnExtractor(g)
    with pytest.raises(DataError, match="expected"):
        ext(torch.zeros(2, 3, 32))
    bad = ws_for(g)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        ext(bad)
    with pytest.raises(DataError, match="out of range"):
        ext.pixels(ws_for(g), torch.tensor([16 * 16]))
    with pytest.raises(ConfigError, match="n_pixels"):
        ext.sample_pixels(ws_for(g), 0)


def test_rescale_coords_follows_the_bilinear_pixel_grid():
    from autolabel.handsoff.hypercolumns import pixel_xy, rescale_coords

    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16)  # value = x on a 16 px image
    small = F.interpolate(ramp, size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    xs = rescale_coords(torch.stack([torch.arange(8.0), torch.zeros(8)], -1), 8, 16)[:, 0]
    torch.testing.assert_close(small[0], xs)  # working pixel i sits at image x = 2i + 0.5
    pts = torch.tensor([[3.0, 7.5], [0.0, 15.0]])
    torch.testing.assert_close(rescale_coords(rescale_coords(pts, 16, 4), 4, 16), pts)
    assert torch.equal(rescale_coords(pts, 16, 16), pts)
    assert pixel_xy(torch.tensor([0, 5, 17]), 8).tolist() == [[0.0, 0.0], [5.0, 0.0], [1.0, 2.0]]
