"""Frozen backbones and the projected discriminator: known answer against torchvision, shapes, frozen backbone,
a D step that separates real from fake, config choice, GANModule training with it."""

import pytest
import pytorch_lightning as pl
import torch
import torchvision
from torch.utils.data import TensorDataset

from autolabel.backbones import FrozenFeatures
from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from autolabel.errors import ConfigError
from autolabel.gan import GANDataModule, GANModule
from autolabel.gan.projected import ProjectedDiscriminator, d_hinge_loss, g_hinge_loss

GEN = dict(resolution=16, z_dim=16, w_dim=16, n_mapping=2, channel_base=64, channel_max=32)


@pytest.mark.parametrize("net,tv,taps", [("vgg", "vgg16", (3, 8, 15)), ("alex", "alexnet", (1, 4, 7))])
def test_frozen_features_match_torchvision_from_a_weights_file(tmp_path, net, tv, taps):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, tv)(weights=None).features.eval()
    sd = {f"features.{k}": v for k, v in ref.state_dict().items()}
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    ff = FrozenFeatures(net, 3, weights=path)
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    x = (img - ff.shift) / ff.scale
    want = []
    for i, layer in enumerate(ref):
        x = layer(x)
        if i in taps:
            want.append(x)
        if i == taps[-1]:
            break
    got = ff(img)
    assert len(got) == 3 and [g.shape[1] for g in got] == ff.channels
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    # converted (LPIPS slice) keys load the same numbers
    torch.save({f"slice1.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "s.pth")
    torch.testing.assert_close(FrozenFeatures(net, 3, weights=tmp_path / "s.pth")(img)[-1], got[-1])


def test_missing_weights_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="autolabel weights lpips"):
        FrozenFeatures("vgg", 2)
    with pytest.raises(ConfigError, match="not found"):
        FrozenFeatures("vgg", 2, weights=tmp_path / "nope.pth")
    assert not FrozenFeatures("vgg", 2, random_backbone=True).pretrained


@pytest.mark.parametrize("res,scales", [(16, 3), (32, 4)])
def test_projected_d_shapes_frozen_backbone_and_head_gradients(res, scales):
    torch.manual_seed(0)
    d = ProjectedDiscriminator(res, backbone="vgg", n_scales=scales, head_channels=8, random_backbone=True)
    img = (torch.rand(3, 3, res, res) * 2 - 1).requires_grad_(True)
    out = d(img)
    assert out.ndim == 2 and out.shape[0] == 3 and out.shape[1] >= scales  # >= one patch logit per scale
    out.mean().backward()
    assert len(list(d.backbone.parameters())) == 0  # backbone weights are buffers: nothing to train or sync
    assert all(not b.requires_grad for b in d.backbone.buffers())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.heads.parameters())
    assert img.grad is not None and img.grad.abs().sum() > 0  # G learns through the frozen backbone
    assert not any(k.startswith("backbone.") for k in d.state_dict())  # not written into checkpoints


def test_projected_d_step_raises_its_real_fake_margin():
    torch.manual_seed(0)
    d = ProjectedDiscriminator(16, n_scales=3, head_channels=16, random_backbone=True)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.99))
    real = torch.rand(16, 3, 16, 16) * 0.5 + 0.5  # bright
    fake = torch.rand(16, 3, 16, 16) * 0.5 - 1.0  # dark

    def margin():
        with torch.no_grad():
            return float(d(real).mean() - d(fake).mean())

    before = margin()
    for _ in range(20):
        loss = d_hinge_loss(d(real), d(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert margin() > before + 0.5
    assert float(d_hinge_loss(d(real), d(fake))) < 1.0
    assert float(g_hinge_loss(torch.tensor([[2.0, 4.0]]))) == -3.0


def test_config_choice_and_defaults():
    assert GeneratorConfig().discriminator == "stylegan2"
    with pytest.raises(ConfigError, match="gan.discriminator"):
        GeneratorConfig(discriminator="patch")
    t = GANTrainConfig()
    assert t.resolved_d_loss("projected") == "hinge" and t.resolved_d_loss("stylegan2") == "logistic"
    assert t.resolved_r1_gamma(64, "projected") == 0.0 and t.resolved_r1_gamma(64) > 0
    assert GANTrainConfig(r1_gamma=0.5).resolved_r1_gamma(64, "projected") == 0.5
    assert "discriminator" not in GeneratorConfig(discriminator="projected").generator_kwargs()


def test_ganmodule_trains_with_the_projected_d():
    torch.manual_seed(0)
    gen = dict(GEN, discriminator="projected", d_scales=3, d_head_channels=8)
    m = GANModule(gen, dict(batch_size=4, random_backbone=True, ema_kimg=0.001))
    assert isinstance(m.discriminator, ProjectedDiscriminator) and m.r1_gamma == 0 and m.d_loss_name == "hinge"
    heads0 = [p.detach().clone() for p in m.discriminator.heads.parameters()]
    g0 = [p.detach().clone() for p in m.generator.parameters()]
    bb0 = {k: v.clone() for k, v in m.discriminator.backbone.named_buffers()}
    dm = GANDataModule(dataset=TensorDataset(torch.rand(8, 3, 16, 16) * 2 - 1), batch_size=4)
    pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(m, datamodule=dm)  # fmt: skip
    assert int(m.n_iter) == 2
    assert any(not torch.equal(a, b) for a, b in zip(heads0, m.discriminator.heads.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()))
    assert all(torch.equal(v, dict(m.discriminator.backbone.named_buffers())[k]) for k, v in bb0.items())
