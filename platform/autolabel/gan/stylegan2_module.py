"""Lightning wrapper for StyleGAN2 training (manual optimization, lazy R1, EMA generator, DiffAugment)."""

from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict
from dataclasses import asdict

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from autolabel.config.core import as_config
from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from autolabel.data.sampling import EpochShuffleSampler
from autolabel.errors import ConfigError, DataError
from autolabel.gan.augment import AdaptiveP, DiffAugment, random_hflip
from autolabel.gan.losses import d_logistic_loss, g_nonsaturating_loss, path_length_penalty, r1_penalty
from autolabel.gan.projected import d_hinge_loss, g_hinge_loss
from autolabel.gan.stylegan2 import Discriminator, Generator, requires_grad


class GANModule(pl.LightningModule):
    """Trains ``generator`` against ``discriminator``; ``g_ema`` (the EMA generator) is what downstream stages use.

    The discriminator is StyleGAN2's (``gan.discriminator=stylegan2``) or trainable heads on a frozen ImageNet backbone
    (``projected``, :mod:`autolabel.gan.projected`). Each step: D loss (logistic, or hinge for the projected D), lazy
    R1 (every ``r1_interval`` steps; off by default for the projected D), G loss (non-saturating / hinge), lazy
    path-length regularization, EMA. With ``quality_every_kimg > 0`` the offline quality metric runs as a callback
    (:mod:`autolabel.gan.quality`). Fakes use style mixing with probability ``style_mixing_prob``. With ``ada_target > 0`` the
    DiffAugment probability follows the ADA controller (:class:`AdaptiveP`, state saved in checkpoints).
    Under DDP use a ``*_find_unused_parameters_true`` strategy (G and D are stepped in separate backward passes, each
    leaving the other network without gradients); ``autolabel fit gan`` picks it for you.
    """

    def __init__(self, generator: GeneratorConfig | dict | None = None, train: GANTrainConfig | dict | None = None):
        super().__init__()
        self.gcfg, self.tcfg = as_config(generator, GeneratorConfig), as_config(train, GANTrainConfig)
        self.save_hyperparameters({"generator": asdict(self.gcfg), "train": asdict(self.tcfg)})
        self.automatic_optimization = False
        self.generator = Generator(**self.gcfg.generator_kwargs())
        t = self.tcfg
        if self.gcfg.discriminator == "projected":
            from autolabel.gan.projected import ProjectedDiscriminator

            self.discriminator = ProjectedDiscriminator(**self.gcfg.projected_kwargs(), weights=t.backbone_weights,
                                                        random_backbone=t.random_backbone)  # fmt: skip
        else:
            self.discriminator = Discriminator(**self.gcfg.discriminator_kwargs())
        self.g_ema = copy.deepcopy(self.generator).eval()
        requires_grad(self.g_ema, False)
        self.r1_gamma = t.resolved_r1_gamma(self.gcfg.resolution, self.gcfg.discriminator)
        self.d_loss_name = t.resolved_d_loss(self.gcfg.discriminator)
        self.d_loss_fn, self.g_loss_fn = (
            (d_hinge_loss, g_hinge_loss) if self.d_loss_name == "hinge" else (d_logistic_loss, g_nonsaturating_loss)
        )
        self.augment = DiffAugment(t.augment_policy, t.augment_p) if t.augment == "diffaugment" else None
        self.ada = None
        if self.augment is not None and t.ada_target > 0:
            self.ada = AdaptiveP(t.ada_target, t.ada_kimg, t.ada_interval, p=t.augment_p)
        self.register_buffer("mean_path_length", torch.zeros(()))
        self.register_buffer("n_iter", torch.zeros((), dtype=torch.long))

    def load_state_dict(self, state_dict, strict: bool = True, **kw):
        """As ``nn.Module.load_state_dict``, then re-read DiffAugment's ``p`` (a plain float) from the ADA controller's
        saved buffer -- Lightning's resume and ``load_from_checkpoint`` both come through here. A checkpoint written
        before the controller state was saved resumes with p = ``augment_p`` (and says so)."""
        if self.ada is not None and not any(k.startswith("ada.") for k in state_dict):
            meta = getattr(state_dict, "_metadata", None)
            state_dict = OrderedDict(state_dict)
            state_dict.update((f"ada.{k}", v) for k, v in self.ada.state_dict().items())
            if meta is not None:
                state_dict._metadata = meta
            warnings.warn(f"checkpoint has no ADA state (written by an older version); p restarts at augment_p="
                          f"{self.tcfg.augment_p}", stacklevel=2)  # fmt: skip
        out = super().load_state_dict(state_dict, strict=strict, **kw)
        self._sync_augment_p()
        return out

    def _sync_augment_p(self) -> None:
        if self.ada is not None and self.augment is not None:
            self.augment.p = float(self.ada.p)

    def setup(self, stage: str) -> None:
        prec = str(self.trainer.precision)
        if prec not in ("32-true", "32", "16-mixed", "bf16-mixed"):
            raise ConfigError(
                f"GAN training does not support trainer.precision={prec!r} (R1 and path-length run in fp32) -- use "
                "32-true, bf16-mixed or 16-mixed"
            )
        from pytorch_lightning.strategies import DDPStrategy

        st = self.trainer.strategy
        if isinstance(st, DDPStrategy) and not st._ddp_kwargs.get("find_unused_parameters", False):
            raise ConfigError(
                "GAN training under DDP needs unused-parameter detection (G and D are stepped separately) -- use "
                "trainer.strategy=ddp_find_unused_parameters_true (or ddp_spawn_find_unused_parameters_true)"
            )

    def configure_callbacks(self):
        """With ``quality_every_kimg > 0``: the offline quality metric (:class:`GANQualityCallback`), which logs the
        VGG Fréchet distance beside its real-vs-real reference and keeps ``best.ckpt``."""
        t = self.tcfg
        if t.quality_every_kimg <= 0:
            return []
        from autolabel.gan.quality import GANQualityCallback

        return [GANQualityCallback(t.quality_every_kimg, t.quality_samples, weights=t.backbone_weights,
                                   random_backbone=t.random_backbone, keep_best=t.keep_best)]  # fmt: skip

    # ----------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        t = self.tcfg
        g_ratio = t.pl_interval / (t.pl_interval + 1) if t.pl_weight > 0 else 1.0
        d_ratio = t.r1_interval / (t.r1_interval + 1) if self.r1_gamma > 0 else 1.0
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=t.lr * g_ratio, betas=(0.0, 0.99**g_ratio))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=t.lr * d_ratio, betas=(0.0, 0.99**d_ratio))
        return [opt_g, opt_d]

    def _aug(self, x: Tensor) -> Tensor:
        return self.augment(x) if self.augment is not None else x

    def _z(self, b: int) -> Tensor:
        return torch.randn(b, self.generator.z_dim, device=self.device)

    def _ws(self, b: int, track_w_avg: bool = False) -> Tensor:
        """W+ latents [b, num_ws, w_dim] for training fakes: one w per sample, and with probability
        ``style_mixing_prob`` a second w from another z for all layers from a random cutoff in 1..num_ws-1 on (one
        cutoff per batch, as StyleGAN2). ``track_w_avg`` updates the running ``w_avg`` from the first w only."""
        g = self.generator
        w = g.mapping(self._z(b))
        if track_w_avg and g.training:
            g.update_w_avg(w)
        prob = self.tcfg.style_mixing_prob
        if prob > 0 and g.num_ws > 1 and float(torch.rand(())) < prob:
            cutoff = int(torch.randint(1, g.num_ws, ()))
            return g.mix_styles(w, g.mapping(self._z(b)), cutoff)
        return w.unsqueeze(1).repeat(1, g.num_ws, 1)

    def _reduce_sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over all ranks (identity without a trainer or on one device)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1:
            return t
        return trainer.strategy.reduce(t, reduce_op="sum")

    def _ada_update(self, real_pred: Tensor) -> float | None:
        """Feed this step's global sign sum and count of D(real) to the ADA controller; when it updates, apply the new
        p and return the measured r_t."""
        if self.ada is None:
            return None
        rt = self.ada.accumulate(self._reduce_sum(AdaptiveP.local_sums(real_pred)))
        if rt is not None:
            self._sync_augment_p()
        return rt

    # ------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not torch.isfinite(real).all():
            raise DataError("training images contain NaN/inf -- check the image folder / preprocessing")
        opt_g, opt_d = self.optimizers()
        t, b, it = self.tcfg, real.shape[0], int(self.n_iter)
        if t.mirror:
            real = random_hflip(real)

        # discriminator
        requires_grad(self.generator, False)
        requires_grad(self.discriminator, True)
        with torch.no_grad():
            fake = self.generator.synthesis(self._ws(b), noise_mode="random")
        real_pred = self.discriminator(self._aug(real))
        fake_pred = self.discriminator(self._aug(fake.detach()))
        d_loss = self.d_loss_fn(real_pred, fake_pred)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.log("train/d_loss", d_loss.detach(), prog_bar=True, sync_dist=True)
        self.log("train/real_score", real_pred.detach().float().mean(), sync_dist=True)
        rt = self._ada_update(real_pred)
        if rt is not None:
            self.log("train/ada_p", float(self.ada.p))
            self.log("train/ada_rt", rt)

        if self.r1_gamma > 0 and it % t.r1_interval == 0:
            real_r = real.detach().float().requires_grad_(True)
            with torch.autocast(device_type=self.device.type, enabled=False):
                pred = self.discriminator(self._aug(real_r))
                r1 = r1_penalty(pred, real_r)
                loss = self.r1_gamma / 2 * r1 * t.r1_interval + 0 * pred[0, 0]
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_d.step()
            self.log("train/r1", r1.detach(), sync_dist=True)

        # generator
        requires_grad(self.generator, True)
        requires_grad(self.discriminator, False)
        fake = self.generator.synthesis(self._ws(b, track_w_avg=True), noise_mode="random")
        g_loss = self.g_loss_fn(self.discriminator(self._aug(fake)))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, sync_dist=True)

        if t.pl_weight > 0 and it % t.pl_interval == 0:
            pb = max(1, b // 2)
            with torch.autocast(device_type=self.device.type, enabled=False):  # mapping too: fp32 grads w.r.t. ws
                ws = self._ws(pb)
                img = self.generator.synthesis(ws, noise_mode="random")
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
