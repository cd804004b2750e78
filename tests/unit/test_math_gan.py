"""Known answers and directions for the StyleGAN2 training math: losses, R1, path length, lazy-regularization factors,
and one training step that moves G and D the right way."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from autolabel.gan import GANDataModule, GANModule
from autolabel.gan import losses as gan_losses
from autolabel.gan.losses import d_logistic_loss, g_nonsaturating_loss, path_length_penalty, r1_penalty

GEN = dict(resolution=16, z_dim=16, w_dim=16, n_mapping=2, channel_base=64, channel_max=32)


def _sp(x: float) -> float:
    return math.log1p(math.exp(x))


def test_logistic_losses_known_answers_and_signs():
    real = torch.tensor([[2.0], [-1.0]])
    fake = torch.tensor([[0.5], [-3.0]])
    # softplus(-D(x)) over reals + softplus(D(G(z))) over fakes, each averaged over the batch
    want_d = (_sp(-2.0) + _sp(1.0)) / 2 + (_sp(0.5) + _sp(-3.0)) / 2
    assert d_logistic_loss(real, fake).item() == pytest.approx(want_d, rel=1e-6)
    assert g_nonsaturating_loss(fake).item() == pytest.approx((_sp(-0.5) + _sp(3.0)) / 2, rel=1e-6)
    # direction: G's loss falls as D scores its fakes higher; D's loss falls as reals rise and fakes fall
    assert g_nonsaturating_loss(fake + 1) < g_nonsaturating_loss(fake)
    assert d_logistic_loss(real + 1, fake) < d_logistic_loss(real, fake)
    assert d_logistic_loss(real, fake - 1) < d_logistic_loss(real, fake)


def test_r1_penalty_known_answer_on_a_quadratic_critic():
    # D(x) = sum(a * x^2) per sample -> dD/dx = 2 a x -> R1 = mean_b sum 4 a^2 x^2
    a = 0.3
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], requires_grad=True)
    pred = (a * x**2).sum(1, keepdim=True)
    want = float(((2 * a * x.detach()) ** 2).sum(1).mean())  # (1 + 4 + .25) * .36 = 1.89 ; (9 + 1) * .36 = 3.6
    assert want == pytest.approx((5.25 * 0.36 + 10 * 0.36) / 2)
    r1 = r1_penalty(pred, x)
    assert r1.item() == pytest.approx(want, rel=1e-6)
    (g,) = torch.autograd.grad(r1, x)  # the graph is kept: d/dx of mean_b sum 4a^2 x^2 = 8 a^2 x / B
    torch.testing.assert_close(g, 8 * a**2 * x.detach() / 2)


def test_path_length_penalty_known_answer(monkeypatch):
    # img_b = k_b * sum(ws_b) on every pixel of a 2x2 image; with the projection noise fixed to ones/sqrt(4) = 0.5,
    # d(sum img * noise)/d ws = 0.5 * 4 * k_b = 2 k_b for every entry; length_b = sqrt(mean_l sum_d (2k_b)^2)
    monkeypatch.setattr(gan_losses.torch, "randn_like", lambda t: torch.ones_like(t))
    k = torch.tensor([1.0, 2.0])
    ws = torch.randn(2, 2, 3, requires_grad=True)  # B=2, num_ws=2, w_dim=3
    img = (k * ws.sum((1, 2)))[:, None, None, None].expand(2, 1, 2, 2)
    lengths = torch.sqrt(torch.tensor(12.0)) * k  # sqrt(3 * 4 k^2)
    mean0, decay = 0.5, 0.1
    new_mean = mean0 + decay * (float(lengths.mean()) - mean0)
    pen, got_mean, got_len = path_length_penalty(img, ws, torch.tensor(mean0), decay)
    assert got_len.item() == pytest.approx(float(lengths.mean()), rel=1e-5)
    assert got_mean.item() == pytest.approx(new_mean, rel=1e-5)
    assert pen.item() == pytest.approx(float(((lengths - new_mean) ** 2).mean()), rel=1e-5)
    pen2, mean2, _ = path_length_penalty(img, ws, torch.tensor(mean0))  # default decay 0.01
    assert mean2.item() == pytest.approx(mean0 + 0.01 * (float(lengths.mean()) - mean0), rel=1e-5)


class _Recorder(pl.Callback):
    def __init__(self):
        self.logs: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.logs.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def _trainer(iters: int, **kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=iters, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)  # fmt: skip


def _data(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GANDataModule(dataset=TensorDataset(torch.rand(n, 3, 16, 16, generator=g) * 2 - 1), batch_size=n)


@pytest.mark.parametrize("interval", [1, 4])
def test_lazy_regularizers_are_scaled_by_their_interval(interval):
    """The R1 step backpropagates gamma/2 * R1 * r1_interval and the path-length step pl_weight * pl_interval * pen:
    lazy regularization runs every `interval` steps, so each run must carry `interval` steps' worth of penalty."""
    torch.manual_seed(0)
    m = GANModule(GEN, dict(batch_size=4, r1_gamma=0.7, r1_interval=interval, pl_weight=3.0, pl_interval=interval,
                            augment="none", style_mixing_prob=0.0))  # fmt: skip
    backward: list[float] = []
    orig = m.manual_backward
    m.manual_backward = lambda loss, *a, **kw: (backward.append(float(loss.detach())), orig(loss, *a, **kw))[1]
    pens: list[float] = []
    orig_pl = gan_losses.path_length_penalty

    def spy(*a, **kw):
        out = orig_pl(*a, **kw)
        pens.append(float(out[0]))
        return out

    import autolabel.gan.stylegan2_module as gm

    gm.path_length_penalty = spy
    rec = _Recorder()
    try:
        _trainer(1, callbacks=[rec]).fit(m, datamodule=_data())
    finally:
        gm.path_length_penalty = orig_pl
    assert len(backward) == 4  # D loss, R1, G loss, path length (step 0 runs both lazy terms)
    r1 = rec.logs[-1]["train/r1"]
    assert r1 > 0 and backward[1] == pytest.approx(0.7 / 2 * r1 * interval, rel=1e-5)
    assert len(pens) == 1 and backward[3] == pytest.approx(3.0 * interval * pens[0], rel=1e-5)
    assert backward[0] == pytest.approx(rec.logs[-1]["train/d_loss"], rel=1e-6)
    assert backward[2] == pytest.approx(rec.logs[-1]["train/g_loss"], rel=1e-6)


def test_r1_runs_every_interval_steps_only():
    torch.manual_seed(0)
    m = GANModule(GEN, dict(batch_size=2, r1_gamma=1.0, r1_interval=2, pl_weight=0.0, augment="none"))
    calls: list[int] = []
    import autolabel.gan.stylegan2_module as gm

    orig = gm.r1_penalty
    gm.r1_penalty = lambda *a: (calls.append(int(m.n_iter)), orig(*a))[1]
    try:
        _trainer(4).fit(m, datamodule=GANDataModule(dataset=TensorDataset(torch.rand(8, 3, 16, 16) * 2 - 1),
                                                    batch_size=2))  # fmt: skip
    finally:
        gm.r1_penalty = orig
    assert calls == [0, 2]


def test_one_training_step_moves_g_and_d_the_right_way():
    """From fixed inputs (fixed z, fixed reals, no augmentation, no regularizers, small lr) one step raises D's margin
    mean D(real) - mean D(fake) on the step's own batch and lowers G's non-saturating loss against the updated D."""
    torch.manual_seed(0)
    m = GANModule(GEN, dict(batch_size=8, lr=2e-4, r1_gamma=0.0, pl_weight=0.0, augment="none",
                            style_mixing_prob=0.0, ema_kimg=0.0))  # fmt: skip
    z = torch.randn(8, GEN["z_dim"])
    m._z = lambda b: z[:b]
    for buf in m.generator.noises.buffers():  # give the noise inputs weight and fixed content; "random" = fixed too
        buf.normal_()
    for mod in m.generator.modules():
        if mod.__class__.__name__ == "NoiseInjection":
            nn.init.constant_(mod.weight, 0.3)
    dm = _data(n=8, seed=3)
    dm.setup()
    real = dm.dataset.tensors[0]

    def fakes(gen):
        ws = gen.mapping(z)[:, None].repeat(1, gen.num_ws, 1)
        return gen.synthesis(ws, noise_mode="const")

    with torch.no_grad():
        import copy

        g0, d0 = copy.deepcopy(m.generator), copy.deepcopy(m.discriminator)
        fake0 = fakes(g0)
        margin0 = float(d0(real).mean() - d0(fake0).mean())
    # training uses random noise: make it the const buffers so the step sees the same fakes we measure
    m.generator._noises = lambda b, mode, like, _g=m.generator: [getattr(_g.noises, f"noise_{i}")
                                                                 for i in range(_g.num_layers)]  # fmt: skip
    _trainer(1).fit(m, datamodule=dm)
    with torch.no_grad():
        d1 = m.discriminator
        margin1 = float(d1(real).mean() - d1(fake0).mean())
        g_loss_before = float(F.softplus(-d1(fake0)).mean())
        g_loss_after = float(F.softplus(-d1(fakes(m.generator))).mean())
    assert margin1 > margin0 + 1e-4, (margin0, margin1)
    assert g_loss_after < g_loss_before - 1e-5, (g_loss_before, g_loss_after)
    # and g_ema followed G (ema_kimg=0: a copy)
    assert all(torch.equal(a, b) for a, b in zip(m.g_ema.parameters(), m.generator.parameters()))


def test_path_length_of_a_constant_image_is_finite(monkeypatch):
    # an image that ignores its latents has zero gradient: length sqrt(0 + 1e-12), never NaN
    ws = torch.randn(2, 2, 3, requires_grad=True)
    img = ws.sum() * 0.0 + torch.ones(2, 1, 2, 2)
    pen, mean, lengths = path_length_penalty(img, ws, torch.tensor(0.0))
    assert torch.isfinite(pen) and lengths.item() == pytest.approx(1e-6, rel=1e-3)
