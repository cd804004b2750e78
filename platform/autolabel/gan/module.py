"""Lightning wrapper for StyleGAN2 training (manual optimization, lazy R1, EMA generator, DiffAugment)."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from autolabel.data.sampling import EpochShuffleSampler
from autolabel.errors import DataError
from autolabel.gan.augment import AdaptiveP, DiffAugment
from autolabel.gan.losses import d_logistic_loss, g_nonsaturating_loss, path_length_penalty, r1_penalty
from autolabel.gan.stylegan2 import Discriminator, Generator, requires_grad


def _as_dict(cfg, cls) -> dict:
    if cfg is None:
        return asdict(cls())
    if isinstance(cfg, cls):
        return asdict(cfg)
    return asdict(cls(**dict(cfg)))


class GANModule(pl.LightningModule):
    """Trains ``generator`` against ``discriminator``; ``g_ema`` (the EMA generator) is what downstream stages use.

    Under DDP use ``strategy="ddp_find_unused_parameters_true"`` (G and D are stepped in separate backward passes).
    """

    def __init__(self, generator: GeneratorConfig | dict | None = None, train: GANTrainConfig | dict | None = None):
        super().__init__()
        gcfg = _as_dict(generator, GeneratorConfig)
        tcfg = _as_dict(train, GANTrainConfig)
        self.save_hyperparameters({"generator": gcfg, "train": tcfg})
        self.gcfg, self.tcfg = GeneratorConfig(**gcfg), GANTrainConfig(**tcfg)
        self.automatic_optimization = False
        self.generator = Generator(**self.gcfg.generator_kwargs())
        self.discriminator = Discriminator(**self.gcfg.discriminator_kwargs())
        self.g_ema = copy.deepcopy(self.generator).eval()
        requires_grad(self.g_ema, False)
        t = self.tcfg
        self.augment = DiffAugment(t.augment_policy, t.augment_p) if t.augment == "diffaugment" else None
        self.ada = AdaptiveP(t.ada_target, t.ada_kimg) if (self.augment is not None and t.ada_target > 0) else None
        self.register_buffer("mean_path_length", torch.zeros(()))
        self.register_buffer("n_iter", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        t = self.tcfg
        g_ratio = t.pl_interval / (t.pl_interval + 1) if t.pl_weight > 0 else 1.0
        d_ratio = t.r1_interval / (t.r1_interval + 1) if t.r1_gamma > 0 else 1.0
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=t.lr * g_ratio, betas=(0.0, 0.99**g_ratio))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=t.lr * d_ratio, betas=(0.0, 0.99**d_ratio))
        return [opt_g, opt_d]

    def _aug(self, x: Tensor) -> Tensor:
        return self.augment(x) if self.augment is not None else x

    def _z(self, b: int) -> Tensor:
        return torch.randn(b, self.generator.z_dim, device=self.device)

    # ------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not torch.isfinite(real).all():
            raise DataError("training images contain NaN/inf -- check the image folder / preprocessing")
        opt_g, opt_d = self.optimizers()
        t, b, it = self.tcfg, real.shape[0], int(self.n_iter)

        # discriminator
        requires_grad(self.generator, False)
        requires_grad(self.discriminator, True)
        with torch.no_grad():
            fake = self.generator(self._z(b), noise_mode="random")
        real_pred = self.discriminator(self._aug(real))
        fake_pred = self.discriminator(self._aug(fake.detach()))
        d_loss = d_logistic_loss(real_pred, fake_pred)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.log("train/d_loss", d_loss.detach(), prog_bar=True, sync_dist=True)
        self.log("train/real_score", real_pred.detach().float().mean(), sync_dist=True)
        if self.ada is not None:
            sign = self.trainer.strategy.reduce(torch.sign(real_pred.detach().float()).mean(), reduce_op="mean")
            p, rt = self.ada.update(self.augment.p, sign, b * self.trainer.world_size)
            self.augment.p = p
            if rt is not None:
                self.log("train/ada_p", p)
                self.log("train/ada_rt", rt)

        if t.r1_gamma > 0 and it % t.r1_interval == 0:
            real_r = real.detach().float().requires_grad_(True)
            with torch.autocast(device_type=self.device.type, enabled=False):
                pred = self.discriminator(self._aug(real_r))
                r1 = r1_penalty(pred, real_r)
                loss = t.r1_gamma / 2 * r1 * t.r1_interval + 0 * pred[0, 0]
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_d.step()
            self.log("train/r1", r1.detach(), sync_dist=True)

        # generator
        requires_grad(self.generator, True)
        requires_grad(self.discriminator, False)
        fake = self.generator(self._z(b), noise_mode="random")
        g_loss = g_nonsaturating_loss(self.discriminator(self._aug(fake)))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, sync_dist=True)

        if t.pl_weight > 0 and it % t.pl_interval == 0:
            pb = max(1, b // 2)
            w = self.generator.mapping(self._z(pb))
            ws = w.unsqueeze(1).repeat(1, self.generator.num_ws, 1)
            with torch.autocast(device_type=self.device.type, enabled=False):
                img = self.generator.synthesis(ws.float(), noise_mode="random")
                pen, new_mean, lengths = path_length_penalty(img, ws, self.mean_path_length, t.pl_decay)
                loss = t.pl_weight * t.pl_interval * pen + 0 * img[0, 0, 0, 0]
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_g.step()
            self.mean_path_length.copy_(new_mean)
            self.log("train/pl", lengths, sync_dist=True)
        requires_grad(self.discriminator, True)

        self.update_ema(b * self.trainer.world_size)
        self.n_iter += 1

    @torch.no_grad()
    def update_ema(self, images_per_step: int) -> None:
        """``g_ema <- lerp(G, g_ema, beta)`` with half-life ``ema_kimg``, capped at ``ema_rampup`` x the images seen so
        far (StyleGAN2-ADA), so a short run's g_ema is not mostly its random init; buffers (w_avg, noises) are copied."""
        kimg = self.tcfg.ema_kimg
        if self.tcfg.ema_rampup > 0:
            kimg = min(kimg, (int(self.n_iter) + 1) * images_per_step * self.tcfg.ema_rampup / 1000.0)
        beta = 0.5 ** (images_per_step / max(kimg * 1000.0, 1e-8)) if kimg > 0 else 0.0
        for pe, p in zip(self.g_ema.parameters(), self.generator.parameters()):
            pe.copy_(p.detach().lerp(pe, beta))
        for be, bsrc in zip(self.g_ema.buffers(), self.generator.buffers()):
            be.copy_(bsrc)

    @torch.no_grad()
    def sample_grid(self, n: int = 16, seed: int = 0, truncation_psi: float = 1.0) -> Tensor:
        """A grid picture [C, H, W] in [0, 1] of ``n`` g_ema samples from a fixed seed."""
        from torchvision.utils import make_grid

        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.g_ema.z_dim, generator=g).to(self.device)
        img = self.g_ema(z, truncation_psi=truncation_psi, noise_mode="const").float()
        return make_grid((img.clamp(-1, 1) + 1) / 2, nrow=max(1, int(math.sqrt(n))))


class GANDataModule(pl.LightningDataModule):
    """Image folder (or any dataset of images in [-1, 1]) for GAN training."""

    def __init__(
        self, root: str | None = None, size: int = 64, channels: int = 3, batch_size: int = 16, num_workers: int = 0,
        dataset: Dataset | None = None,
    ):  # fmt: skip
        super().__init__()
        if root is None and dataset is None:
            raise DataError("GANDataModule needs an image folder -- set data.root to a directory of images")
        self.root, self.size, self.channels = root, size, channels
        self.batch_size, self.num_workers = batch_size, num_workers
        self.dataset = dataset

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            from autolabel.data.images import ImageFolderDataset

            self.dataset = ImageFolderDataset(self.root, size=self.size, channels=self.channels, with_labels=False)
        if len(self.dataset) == 0:
            raise DataError(f"no images in {self.root} -- put .png/.jpg files there")

    def train_dataloader(self) -> DataLoader:
        drop = len(self.dataset) >= self.batch_size
        return DataLoader(self.dataset, batch_size=self.batch_size, sampler=EpochShuffleSampler(self.dataset), drop_last=drop,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)  # fmt: skip
