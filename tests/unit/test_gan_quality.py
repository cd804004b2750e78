"""Offline GAN quality metric: Fréchet distance / KID known answers, the training callback (curve, reference,
best.ckpt, keep_best), and the unfused modulated conv equalling the grouped one."""

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset

from autolabel.gan import GANDataModule, GANModule
from autolabel.gan.quality import GANQualityCallback, frechet_distance, kernel_inception_distance
from autolabel.gan.stylegan2 import ModulatedConv2d

GEN = dict(resolution=16, z_dim=16, w_dim=16, n_mapping=2, channel_base=64, channel_max=32)


def _gauss(mean, cov, n, seed):
    """n samples whose empirical mean and covariance are exactly ``mean`` and ``cov``."""
    x = np.random.default_rng(seed).standard_normal((n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # whiten to identity covariance
    return x @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_known_answer_on_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    c1, c2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    a, b = _gauss(mu1, c1, 400, 0), _gauss(mu2, c2, 500, 1)
    # diagonal covariances: ||mu1-mu2||^2 + sum (sqrt(s1) - sqrt(s2))^2 = 5 + (1 + 1 + 4)
    assert frechet_distance(a, b) == pytest.approx(11.0, rel=1e-6)
    # a full covariance against itself shifted: only the mean term remains
    c = np.array([[2.0, 0.5], [0.5, 1.0]])
    x = _gauss(np.zeros(2), c, 300, 2)
    assert frechet_distance(x, x + np.array([3.0, 4.0])) == pytest.approx(25.0, abs=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(11.0, rel=1e-6)


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 8)), rng.standard_normal((300, 8))
    assert abs(kernel_inception_distance(a, b, subset_size=200)) < 0.05
    assert kernel_inception_distance(a, b + 1.0, subset_size=200) > 0.5


def _quality_cb(trainer):
    return next(c for c in trainer.callbacks if isinstance(c, GANQualityCallback))


def test_callback_logs_curve_reference_and_keeps_the_best_snapshot(tmp_path):
    torch.manual_seed(0)
    m = GANModule(GEN, dict(batch_size=4, quality_every_kimg=0.008, quality_samples=6, random_backbone=True))
    assert [type(c) for c in m.configure_callbacks()] == [GANQualityCallback]
    dm = GANDataModule(dataset=TensorDataset(torch.rand(12, 3, 16, 16) * 2 - 1), batch_size=4)
    states = {}  # g_ema after each step, to check keep_best

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            states[int(pl_module.n_iter)] = {k: v.clone() for k, v in pl_module.g_ema.state_dict().items()}

    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[Spy()],
                         enable_checkpointing=False)  # fmt: skip
    trainer.fit(m, datamodule=dm)
    cb = _quality_cb(trainer)
    assert int(m.n_iter) == 6
    steps = [r["step"] for r in cb.history]
    assert steps == [1, 2, 4, 6]  # the first step, then each time another 8 images (2 steps of 4) were seen
    assert all(r["n"] == 6 and r["fd_vgg"] > 0 for r in cb.history)
    assert len({r["fd_vgg_real"] for r in cb.history}) == 1 and cb.history[0]["fd_vgg_real"] > 0
    saved = json.loads((tmp_path / "quality" / "quality.json").read_text())
    assert [r["step"] for r in saved] == steps
    assert len(list((tmp_path / "quality").glob("samples_kimg*.png"))) == 4
    best = min(cb.history, key=lambda r: r["fd_vgg"])
    assert cb.best == best["fd_vgg"] and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    ck = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    assert int(ck["state_dict"]["n_iter"]) == best["step"]
    # keep_best: g_ema after fit is the best snapshot's (not the last one's)
    assert best["step"] == 6 or any(not torch.equal(v, states[6][k]) for k, v in m.g_ema.state_dict().items())
    for k, v in m.g_ema.state_dict().items():
        torch.testing.assert_close(v, states[best["step"]][k])


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_unfused_modconv_equals_grouped(upsample, demodulate):
    torch.manual_seed(0)
    m = ModulatedConv2d(6, 5, 3, 4, demodulate=demodulate, upsample=upsample)
    x, s = torch.randn(3, 6, 8, 8, requires_grad=True), torch.randn(3, 4)
    outs, grads = [], []
    for fused in (True, False):
        m.fused = fused
        y = m(x, s)
        (g,) = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), x)
        outs.append(y.detach())
        grads.append(g)
    assert outs[0].shape == (3, 5, 16 if upsample else 8, 16 if upsample else 8)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_fused_modconv_config_key_reaches_every_modulated_conv():
    from autolabel.errors import ConfigError
    from autolabel.gan.stylegan2 import Generator
    from autolabel.gan.stylegan2_module import GANModule

    gen = dict(resolution=8, z_dim=8, w_dim=8, n_mapping=1, channel_base=64, channel_max=8)
    for value in (True, False, None):
        m = GANModule({**gen, "fused_modconv": value}, {"batch_size": 2})
        convs = [c for net in (m.generator, m.g_ema) for c in net.modules() if isinstance(c, ModulatedConv2d)]
        assert convs and all(c.fused is value for c in convs)
    g = Generator(**gen)
    assert all(c.fused is None for c in g.modules() if isinstance(c, ModulatedConv2d))  # default: unfused on CPU
    assert "fused_modconv" not in g.init_kwargs  # a run-time choice, not saved with the weights
    with pytest.raises(ConfigError, match="fused_modconv='yes'"):
        Generator(**gen, fused_modconv="yes")
