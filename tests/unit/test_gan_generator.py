"""StyleGAN2 generator / discriminator / losses / augmentation on tiny shapes."""

import pytest
import torch

from autolabel.errors import ConfigError, DataError
from autolabel.gan import (
    DiffAugment,
    Discriminator,
    Generator,
    d_logistic_loss,
    g_nonsaturating_loss,
    path_length_penalty,
    r1_penalty,
)
from autolabel.gan.augment import AdaptiveP
from autolabel.gan.stylegan2 import channel_schedule, make_kernel, upfirdn2d

TINY = dict(z_dim=16, w_dim=16, n_mapping=2, channel_base=64, channel_max=32)


def tiny_gen(res=16, seed=0):
    torch.manual_seed(seed)
    return Generator(res, **TINY).eval()


@pytest.mark.parametrize("res", [16, 32])
def test_shapes_and_feature_metadata(res):
    g = tiny_gen(res)
    assert g.num_ws == {16: 6, 32: 8}[res]
    img, feats = g(torch.randn(2, 16), return_features=True)
    assert img.shape == (2, 3, res, res)
    n_levels = {16: 3, 32: 4}[res]
    assert len(feats) == 2 + 2 * (n_levels - 1) == len(g.feature_channels) == len(g.feature_resolutions)
    for f, c, r in zip(feats, g.feature_channels, g.feature_resolutions):
        assert f.shape == (2, c, r, r)
    assert g.feature_resolutions[:2] == [4, 4] and g.feature_resolutions[-1] == res
    assert torch.isfinite(img).all() and img.abs().max() < 20


def test_config_f_channels_match_paper():
    ch = channel_schedule(1024)
    assert ch == [512, 512, 512, 512, 512, 256, 128, 64, 32]
    # hypercolumn width of a 1024 FFHQ generator (DESIGN 3.3)
    width = 2 * ch[0] + 2 * sum(ch[1:])
    assert width == 6080


def test_const_noise_deterministic_random_not():
    g = tiny_gen()
    ws = torch.randn(2, g.num_ws, g.w_dim)
    for conv in list(g.convs) + [g.conv1]:  # make noise matter
        conv.noise.weight.data.fill_(0.5)
    a, fa = g.synthesis(ws, noise_mode="const", return_features=True)
    b, fb = g.synthesis(ws, noise_mode="const", return_features=True)
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(fa, fb))
    r1, r2 = g.synthesis(ws, noise_mode="random"), g.synthesis(ws, noise_mode="random")
    assert not torch.allclose(r1, r2)
    n = g.synthesis(ws, noise_mode="none")
    assert not torch.allclose(n, a)


def test_truncation_zero_gives_w_avg():
    g = tiny_gen()
    g.w_avg.copy_(torch.randn(g.w_dim))
    w = g.mapping(torch.randn(3, 16), truncation_psi=0.0)
    assert torch.allclose(w, g.w_avg.expand(3, -1))
    img0 = g(torch.randn(1, 16), truncation_psi=0.0)
    img1 = g(torch.randn(1, 16), truncation_psi=0.0)
    assert torch.allclose(img0, img1, atol=1e-6)


def test_w_avg_tracked_in_training_only():
    g = tiny_gen()
    g(torch.randn(4, 16))
    assert not torch.any(g.w_avg)
    g.train()
    g(torch.randn(4, 16))
    assert torch.any(g.w_avg)
    m = g.mean_latent(64)
    assert m.shape == (16,)


def test_gradients_flow_to_ws():
    g = tiny_gen()
    ws = torch.randn(1, g.num_ws, g.w_dim, requires_grad=True)
    img, feats = g.synthesis(ws, return_features=True)
    (img.square().mean() + feats[-1].mean()).backward()
    assert ws.grad is not None and ws.grad.abs().sum(-1).gt(0).all()


def test_bad_inputs_raise():
    g = tiny_gen()
    with pytest.raises(DataError, match="ws must have shape"):
        g.synthesis(torch.randn(1, 3, 16))
    with pytest.raises(DataError, match="z must have shape"):
        g.mapping(torch.randn(2, 7))
    with pytest.raises(ConfigError, match="noise_mode"):
        g.synthesis(torch.randn(1, g.num_ws, 16), noise_mode="bogus")
    with pytest.raises(ConfigError, match="power of two"):
        Generator(48, **TINY)
    with pytest.raises(ConfigError, match="unknown Generator options"):
        Generator(16, **TINY, bogus=1)
    d = Discriminator(16, channel_base=64, channel_max=32)
    with pytest.raises(DataError, match="discriminator input"):
        d(torch.randn(2, 3, 32, 32))


def test_upsample_filter_preserves_constant():
    x = torch.ones(1, 2, 4, 4)
    k = make_kernel([1, 3, 3, 1]) * 4
    y = upfirdn2d(x, k, up=2, pad=(2, 1))
    assert y.shape == (1, 2, 8, 8)
    assert torch.allclose(y[:, :, 2:-2, 2:-2], torch.ones(1, 2, 4, 4))


@pytest.mark.parametrize("res,batch", [(16, 4), (32, 3)])
def test_discriminator_shapes(res, batch):
    torch.manual_seed(0)
    d = Discriminator(res, channel_base=64, channel_max=32, mbstd_group=4)
    out = d(torch.randn(batch, 3, res, res))
    assert out.shape == (batch, 1) and torch.isfinite(out).all()


def test_losses_and_r1():
    torch.manual_seed(0)
    d = Discriminator(16, channel_base=64, channel_max=32)
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    pred = d(real)
    r1 = r1_penalty(pred, real)
    assert torch.isfinite(r1) and r1 > 0
    r1.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    # known answers: softplus(0) = log 2
    z = torch.zeros(3, 1)
    assert torch.allclose(d_logistic_loss(z, z), torch.tensor(2 * 0.6931472), atol=1e-6)
    assert torch.allclose(g_nonsaturating_loss(z), torch.tensor(0.6931472), atol=1e-6)


def test_path_length_penalty():
    g = tiny_gen()
    ws = torch.randn(2, g.num_ws, g.w_dim, requires_grad=True)
    img = g.synthesis(ws)
    pen, mean, lengths = path_length_penalty(img, ws, torch.tensor(0.0))
    assert torch.isfinite(pen) and lengths > 0 and 0 < mean < lengths
    pen.backward()


def test_diffaugment_differentiable_and_shape_preserving():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    aug = DiffAugment("color,translation,cutout", p=1.0)
    y = aug(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(DiffAugment(p=0.0)(x), x)
    with pytest.raises(ConfigError, match="unknown DiffAugment policy"):
        DiffAugment("rotate")
    with pytest.raises(ConfigError, match="augment_p"):
        DiffAugment(p=1.5)


def test_translation_is_a_shift_and_cutout_zeroes_quarter():
    from autolabel.gan.augment import rand_cutout, rand_translation

    torch.manual_seed(1)
    x = torch.arange(64.0).view(1, 1, 8, 8)
    y = rand_translation(x, ratio=0.125)
    vals = set(y.flatten().tolist()) - {0.0}
    assert vals <= set(x.flatten().tolist()) and len(vals) >= 49
    c = rand_cutout(torch.ones(2, 1, 8, 8), ratio=0.5)
    assert ((c == 0).sum(dim=(1, 2, 3)) <= 16).all() and (c == 0).any()


def _pred(n_pos: int, n_neg: int) -> torch.Tensor:
    return torch.cat([torch.full((n_pos, 1), 0.7), torch.full((n_neg, 1), -0.2)])


def test_adaptive_p_moves_by_sign_of_rt_minus_target_with_known_step():
    # speed 1 kimg: each image moves p by 1/1000; interval 2 steps of 8 images -> |step| = 16/1000
    ada = AdaptiveP(target=0.6, speed_kimg=1.0, interval=2, p=0.5)
    s = AdaptiveP.local_sums(_pred(6, 2))  # r_t = (6 - 2) / 8 = 0.5 < target (sign(mean) would be +1)
    assert s.tolist() == [4, 8]
    assert ada.accumulate(s) is None and float(ada.p) == 0.5  # no update before `interval` steps
    rt = ada.accumulate(s)
    assert rt == 0.5 and float(ada.p) == pytest.approx(0.5 - 0.016, abs=1e-12)  # D not overfitting -> less aug.
    assert int(ada.sign_sum) == int(ada.count) == int(ada.steps) == 0  # sums reset after the update
    for _ in range(2):
        rt = ada.accumulate(AdaptiveP.local_sums(_pred(7, 1)))  # r_t = 0.75 > 0.6: overfitting -> more augmentation
    assert rt == 0.75 and float(ada.p) == pytest.approx(0.5, abs=1e-12)
    for _ in range(2):
        ada.accumulate(torch.tensor([3, 5]))  # r_t = 0.6 == target: p stays
    assert float(ada.p) == pytest.approx(0.5, abs=1e-12)
    # the step is proportional to the images seen (global counts under DDP): 4 x more images -> 4 x the step
    big = AdaptiveP(target=0.6, speed_kimg=1.0, interval=2, p=0.5)
    for _ in range(2):
        big.accumulate(AdaptiveP.local_sums(_pred(24, 8)))
    assert float(big.p) == pytest.approx(0.5 - 0.064, abs=1e-12)


def test_adaptive_p_counts_steps_on_the_host_and_resumes_mid_interval():
    ada = AdaptiveP(target=0.6, speed_kimg=1.0, interval=3, p=0.5)
    ada.accumulate(AdaptiveP.local_sums(_pred(7, 1)))
    ada.accumulate(AdaptiveP.local_sums(_pred(7, 1)))
    state = {k: v.clone() for k, v in ada.state_dict().items()}
    assert int(state["steps"]) == 2
    resumed = AdaptiveP(target=0.6, speed_kimg=1.0, interval=3, p=0.5)
    resumed.accumulate(AdaptiveP.local_sums(_pred(7, 1)))  # its own host counter is at 1 ...
    resumed.load_state_dict(state)  # ... until a checkpoint replaces the buffers: then it follows them
    for a in (ada, resumed):
        assert a.accumulate(AdaptiveP.local_sums(_pred(7, 1))) == 0.75  # the 3rd step of the interval updates p
        assert float(a.p) == pytest.approx(0.5 + 0.024, abs=1e-12) and int(a.steps) == 0


def test_adaptive_p_is_clamped_and_validated():
    ada = AdaptiveP(target=0.6, speed_kimg=0.001, interval=1, p=0.5)
    ada.accumulate(AdaptiveP.local_sums(_pred(8, 0)))
    assert float(ada.p) == 1.0
    ada.accumulate(AdaptiveP.local_sums(_pred(0, 8)))
    assert float(ada.p) == 0.0
    assert {k for k, _ in ada.named_buffers()} == {"p", "sign_sum", "count", "steps"}  # saved in checkpoints
    with pytest.raises(ConfigError, match="start p"):
        AdaptiveP(p=1.5)
    with pytest.raises(ConfigError, match="ada_interval"):
        AdaptiveP(interval=0)


def test_mean_latent_is_deterministic_and_leaves_the_global_rng_alone():
    g = tiny_gen()
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a = g.mean_latent(256)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(6)
    assert torch.equal(g.mean_latent(256), a)
    assert not torch.allclose(g.mean_latent(256, seed=1), a)
    z = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a, g.style(z).mean(0))  # = mean of mapped latents from seed 0


def test_mix_styles_switches_rows_at_the_cutoff():
    g = tiny_gen()
    w, w2 = torch.randn(3, 16), torch.randn(3, 16)
    for cutoff in (1, 3, g.num_ws - 1):
        ws = g.mix_styles(w, w2, cutoff)
        assert ws.shape == (3, g.num_ws, 16)
        assert torch.equal(ws[:, :cutoff], w.unsqueeze(1).expand(-1, cutoff, -1))
        assert torch.equal(ws[:, cutoff:], w2.unsqueeze(1).expand(-1, g.num_ws - cutoff, -1))
    assert torch.equal(g.mix_styles(w, w2, g.num_ws), w.unsqueeze(1).repeat(1, g.num_ws, 1))
    with pytest.raises(ConfigError, match="cutoff"):
        g.mix_styles(w, w2, 0)


def test_conv_clamp_bounds_every_layer_output():
    torch.manual_seed(0)
    free = Generator(16, **TINY).eval()
    torch.manual_seed(0)
    clamped = Generator(16, **TINY, conv_clamp=0.25).eval()
    z = torch.randn(2, 16)
    with torch.no_grad():
        img_f, feats_f = free(z, return_features=True)
        img_c, feats_c = clamped(z, return_features=True)
    assert max(float(f.abs().max()) for f in feats_f[1:]) > 0.25  # the clamp has something to do
    assert all(float(f.abs().max()) <= 0.25 for f in feats_c[1:])
    assert torch.equal(feats_c[0], feats_f[0])  # the learned constant is not a conv output
    assert clamped.init_kwargs["conv_clamp"] == 0.25 and "conv_clamp" not in free.init_kwargs
    with pytest.raises(ConfigError, match="conv_clamp"):
        Generator(16, **TINY, conv_clamp=0)


def test_random_hflip_mirrors_about_half_of_the_images_and_nothing_else():
    from autolabel.gan.augment import random_hflip

    torch.manual_seed(0)
    x = torch.randn(400, 3, 4, 5)
    y = random_hflip(x)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert y.shape == x.shape and bool((same | mirrored).all())  # every image is itself or its mirror image
    assert 150 < int(mirrored.sum()) < 250  # p = 0.5
