"""Latent inversion: encoder pass + per-image refinement that keeps the best latent."""

from __future__ import annotations

import pytest
import torch
from test_handsoff_encoder import real_generator, tiny_generator

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


def _noisy_generator():
    """A small real StyleGAN2 with every noise input switched on (a trained GAN's strengths are not zero)."""
    g = real_generator()
    with torch.no_grad():
        for m in g.modules():
            if type(m).__name__ == "NoiseInjection":
                m.weight.fill_(0.5)
    return g


def test_noise_regularizer_known_answers() -> None:
    from autolabel.handsoff.invert import noise_regularizer

    ones = torch.ones(2, 1, 16, 16)  # fully correlated: (mean of 1*1)^2 = 1 per direction, at 16 and 8 px -> 4
    assert torch.allclose(noise_regularizer([ones]), torch.full((2,), 4.0))
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 2.0 - 1.0
    # neighbours always of opposite sign: 1 per direction at 16 px; 2x2 averaging leaves 0 at 8 px
    assert torch.allclose(noise_regularizer([checker.expand(1, 1, 16, 16)]), torch.tensor([2.0]))
    white = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert (noise_regularizer([white]) < 1e-3).all()  # white noise is (nearly) free
    assert noise_regularizer([white, ones[:1].expand(3, -1, -1, -1)]).shape == (3,)  # summed over maps, per image


def test_optimize_noise_fits_the_image_with_the_code_fixed() -> None:
    from autolabel.handsoff.invert import noise_regularizer, optimize_noise

    g = _noisy_generator()
    before = [p.clone() for p in g.parameters()]
    torch.manual_seed(1)
    with torch.no_grad():
        ws = g.mapping(torch.randn(3, g.z_dim)).unsqueeze(1).repeat(1, g.num_ws, 1)
        x = g.synthesis(ws, noise_mode="random")  # reachable by other noise, the same codes
        const = g.synthesis(ws, noise_mode="const")
    start = optimize_noise(g, ws, x, steps=0, progress=False)  # step 0 = the constant noise
    assert torch.allclose(start["recon"], const)
    out = optimize_noise(g, ws, x, steps=60, lr=0.3, reg_weight=0.0, progress=False)
    assert [tuple(n.shape) for n in out["noise"]] == [(3, 1, *hw) for hw in g.noise_shapes]
    assert (out["mse"] <= start["mse"] + 1e-7).all()  # never worse, per image
    assert out["mse"].mean() < 0.5 * start["mse"].mean()  # and clearly better
    with torch.no_grad():
        assert torch.allclose(g.synthesis(ws, noise=out["noise"]), out["recon"], atol=1e-6)
    for n in out["noise"]:  # renormalized like the N(0, 1) noise the generator trained with
        assert torch.allclose(n.mean((1, 2, 3)), torch.zeros(3), atol=1e-5)
        assert torch.allclose(n.std((1, 2, 3)), torch.ones(3), atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(before, g.parameters(), strict=True))
    assert all(p.requires_grad for p in g.parameters())
    # the regularizer keeps the maps noise-like: a heavy weight leaves them less correlated than none
    free = optimize_noise(g, ws, x, steps=60, lr=0.3, reg_weight=0.0, progress=False)
    held = optimize_noise(g, ws, x, steps=60, lr=0.3, reg_weight=1e4, progress=False)
    assert noise_regularizer(held["noise"]).mean() < noise_regularizer(free["noise"]).mean()


def test_optimize_noise_errors() -> None:
    from autolabel.handsoff.invert import optimize_noise

    g = _noisy_generator()
    ws = torch.zeros(2, g.num_ws, g.w_dim)
    with pytest.raises(ConfigError, match="need steps >= 0"):
        optimize_noise(g, ws, torch.zeros(2, 3, 16, 16), steps=-1, progress=False)
    with pytest.raises(DataError, match="3 images for 2 latents"):
        optimize_noise(g, ws, torch.zeros(3, 3, 16, 16), steps=1, progress=False)
