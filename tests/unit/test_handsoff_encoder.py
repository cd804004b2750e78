"""Inversion encoder, its two-phase Lightning training, and latent inversion on a tiny generator."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from autolabel.config.inversion import EncoderConfig, EncoderTrainConfig
from autolabel.errors import ConfigError, DataError
from autolabel.handsoff.encoder import InversionEncoder, style_groups
from autolabel.handsoff.encoder_module import EncoderModule

try:
    from autolabel.gan import Generator
except ImportError:  # the GAN package may not export it yet
    from autolabel.gan.stylegan2 import Generator


class FastGenerator(torch.nn.Module):
    """A fast stand-in with the Generator contract (the real StyleGAN2 costs ~1 s per step on this CPU)."""

    def __init__(self, resolution: int = 16, z_dim: int = 8, w_dim: int = 8, img_channels: int = 3) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.resolution, self.img_channels = z_dim, w_dim, resolution, img_channels
        self.num_ws = 2 * resolution.bit_length() - 4
        self.map = torch.nn.Sequential(torch.nn.Linear(z_dim, w_dim), torch.nn.Tanh())
        self.layer_mix = torch.nn.Parameter(torch.randn(self.num_ws, w_dim) * 0.5)
        self.to_img = torch.nn.Linear(w_dim, img_channels * 16)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def mapping(self, z, truncation_psi=1.0):
        return self.w_avg.lerp(self.map(z), truncation_psi)

    def mean_latent(self, n=4096):
        return self.map(torch.randn(n, self.z_dim)).mean(0)

    def synthesis(self, ws, noise_mode="const", return_features=False):
        h = (ws * self.layer_mix).mean(1) * 4
        img = self.to_img(h).view(-1, self.img_channels, 4, 4)
        return torch.tanh(torch.nn.functional.interpolate(img, size=self.resolution, mode="bilinear"))

    def forward(self, z, truncation_psi=1.0, noise_mode="const", return_features=False):
        ws = self.mapping(z, truncation_psi)[:, None].repeat(1, self.num_ws, 1)
        return self.synthesis(ws, noise_mode, return_features)


def tiny_generator(resolution: int = 16, seed: int = 0) -> FastGenerator:
    torch.manual_seed(seed)
    return FastGenerator(resolution)


def real_generator(resolution: int = 16, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(resolution=resolution, z_dim=32, w_dim=32, n_mapping=2, channel_base=256, channel_max=16)


def _trainer(steps: int, **kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)  # fmt: skip


def _loader(n: int = 8, res: int = 16) -> DataLoader:
    torch.manual_seed(1)
    return DataLoader(TensorDataset(torch.rand(n, 3, res, res) * 2 - 1), batch_size=4, shuffle=False)


@pytest.mark.parametrize("resolution", [16, 32])
@pytest.mark.parametrize("mode", ["pyramid", "restyle"])
def test_encoder_shape_and_gradients(resolution: int, mode: str) -> None:
    g = tiny_generator(resolution)
    enc = InversionEncoder.from_generator(g, mode=mode, width=8, max_width=16, n_iters=2)
    x = torch.rand(2, 3, resolution, resolution) * 2 - 1
    ws = enc(x, g)
    assert ws.shape == (2, g.num_ws, g.w_dim)
    ws.pow(2).mean().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(gr is not None for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0


def test_encoder_any_channels_and_offsets_from_average() -> None:
    w_avg = torch.arange(8, dtype=torch.float32)
    enc = InversionEncoder(resolution=64, num_ws=10, w_dim=8, img_channels=1, width=4, max_width=8, w_avg=w_avg)
    for p in enc.net.heads.parameters():
        torch.nn.init.zeros_(p)  # zero offsets -> exactly the average latent on every layer
    out = enc(torch.zeros(3, 1, 64, 64))
    assert out.shape == (3, 10, 8)
    assert torch.allclose(out, w_avg.expand(3, 10, 8))


def test_style_groups_cover_all_layers() -> None:
    assert style_groups(18) == (3, 4, 11)
    for n in range(1, 20):
        assert sum(style_groups(n)) == n


def test_encoder_errors() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        InversionEncoder(resolution=24, num_ws=6, w_dim=8)
    with pytest.raises(ConfigError, match="mode"):
        InversionEncoder(resolution=16, num_ws=6, w_dim=8, mode="e4e")
    enc = InversionEncoder(resolution=16, num_ws=6, w_dim=8, width=4, max_width=8)
    with pytest.raises(DataError, match="expected \\[B, 3, 16, 16\\]"):
        enc(torch.zeros(1, 3, 32, 32))
    with pytest.raises(DataError, match="NaN"):
        enc(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ConfigError, match="needs the generator"):
        InversionEncoder(resolution=16, num_ws=6, w_dim=8, mode="restyle", width=4, max_width=8)(
            torch.zeros(1, 3, 16, 16)
        )
    with pytest.raises(ConfigError, match="w_avg"):
        InversionEncoder(resolution=16, num_ws=6, w_dim=8, w_avg=torch.zeros(5))


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="encoder.mode"):
        EncoderConfig(mode="psp")
    with pytest.raises(ConfigError, match="n_iters"):
        EncoderConfig(n_iters=0)
    with pytest.raises(ConfigError, match="truncation_psi"):
        EncoderTrainConfig(truncation_psi=0.0)
    with pytest.raises(ConfigError, match="lpips_net"):
        EncoderTrainConfig(lpips_net="squeeze")
    with pytest.raises(ConfigError, match="phase1_steps"):
        EncoderTrainConfig(phase1_steps=0, finetune_steps=0)
    with pytest.raises(ConfigError, match=r"EncoderTrainConfig has no field\(s\) \[.phase_one.\]"):
        EncoderModule(train={"phase_one": 3}, generator=tiny_generator())
    with pytest.raises(ConfigError, match="needs a generator"):
        EncoderModule()
