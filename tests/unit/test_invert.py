"""Latent inversion: encoder pass + per-image refinement that keeps the best latent."""

from __future__ import annotations

import pytest
import torch
from test_handsoff_encoder import tiny_generator

from autolabel.errors import ConfigError, DataError
from autolabel.handsoff.encoder import InversionEncoder
from autolabel.handsoff.invert import cosine_lr, invert_images


def _setup():
    g = tiny_generator()
    enc = InversionEncoder.from_generator(g, width=4, max_width=8)
    torch.manual_seed(3)
    with torch.no_grad():
        x = g(torch.randn(3, g.z_dim)) + 0.05 * torch.randn(3, 3, 16, 16)
    return g, enc, x


def test_encoder_only_shapes() -> None:
    g, enc, x = _setup()
    out = invert_images(enc, g, x, progress=False)
    assert out["ws"].shape == (3, g.num_ws, g.w_dim)
    assert out["recon"].shape == x.shape
    assert out["mse"].shape == (3,)
    assert out["lpips"] is None


def test_refinement_improves_and_never_worse() -> None:
    g, enc, x = _setup()
    before = [p.clone() for p in g.parameters()]
    base = invert_images(enc, g, x, progress=False)
    lp = lambda a, b: (a - b).abs().flatten(1).mean(1).view(-1, 1, 1, 1)  # noqa: E731 - a cheap LPIPS stand-in
    ref = invert_images(enc, g, x, refine_steps=40, lr=0.1, lpips=lp, latent_weight=0.0, progress=False)
    base_lp = lp(base["recon"], x).view(-1)
    assert (10 * ref["lpips"] + ref["mse"] <= 10 * base_lp + base["mse"] + 1e-6).all()  # never worse, per image
    assert ref["mse"].mean() < 0.9 * base["mse"].mean()  # and clearly better on average
    assert all(torch.equal(a, b) for a, b in zip(before, g.parameters(), strict=True))
    assert all(p.requires_grad for p in g.parameters())  # requires_grad restored


def test_tiny_lr_returns_encoder_latent_when_nothing_improves() -> None:
    g, enc, x = _setup()
    base = invert_images(enc, g, x, progress=False)
    # a huge latent penalty makes every move worse than the encoder latent, so it must be kept exactly
    ref = invert_images(enc, g, x, refine_steps=5, lr=1.0, latent_weight=1e6, progress=False)
    assert torch.allclose(ref["ws"], base["ws"])


def test_deterministic() -> None:
    g, enc, x = _setup()
    a = invert_images(enc, g, x, refine_steps=5, progress=False)
    b = invert_images(enc, g, x, refine_steps=5, progress=False)
    assert torch.equal(a["ws"], b["ws"])


def test_cosine_lr_schedule() -> None:
    assert cosine_lr(0, 100, 0.1) == 0.0
    assert cosine_lr(5, 100, 0.1) == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 0.05)).item()))
    assert cosine_lr(100, 100, 0.1) == pytest.approx(0.0)


def test_invert_errors() -> None:
    g, enc, x = _setup()
    with pytest.raises(DataError, match="expected \\[B, 3, 16, 16\\]"):
        invert_images(enc, g, x[:, :1], progress=False)
    with pytest.raises(DataError, match="NaN"):
        invert_images(enc, g, torch.full_like(x, float("nan")), progress=False)
    with pytest.raises(ConfigError, match="refine_steps"):
        invert_images(enc, g, x, refine_steps=-1, progress=False)
    with pytest.raises(ConfigError, match="the encoder is on meta but the generator on cpu"):
        invert_images(enc.to("meta"), g, x, progress=False)  # inversion runs where the generator is: both there


def test_latent_spread_tells_a_collapsed_inversion_from_a_diverse_one() -> None:
    from autolabel.handsoff.invert import latent_spread

    g = tiny_generator()
    with torch.no_grad():
        w = g.mapping(torch.randn(64, g.z_dim, generator=torch.Generator().manual_seed(5)))
    diverse = w.unsqueeze(1).repeat(1, g.num_ws, 1)
    collapsed = w.mean(0, keepdim=True).repeat(8, 1).unsqueeze(1).repeat(1, g.num_ws, 1)
    collapsed = collapsed + 1e-3 * torch.randn_like(collapsed)
    d, c = latent_spread(diverse, g, n_sampled=256), latent_spread(collapsed, g, n_sampled=256)
    assert d["sampled"] == pytest.approx(c["sampled"]) and d["sampled"] > 0
    assert 0.7 < d["ratio"] < 1.3  # codes as far apart as the GAN's own latents
    assert c["ratio"] < 0.05  # every image inverted to (nearly) one code
    # known answer: two codes at distance 2 on every layer -> mean pairwise distance 2
    two = torch.zeros(2, g.num_ws, g.w_dim)
    two[1, :, 0] = 2.0
    assert latent_spread(two, g)["inverted"] == pytest.approx(2.0)
