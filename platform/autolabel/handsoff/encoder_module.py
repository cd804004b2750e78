"""Lightning wrapper that trains the inversion encoder against a frozen generator (two phases, capped).

Phase 1 (``global_step < phase1_steps``): generator samples only; the real batch is ignored.
loss = latent_weight * MSE(E(x), w) + mse_weight * MSE(G(E(x)), x) [+ phase1_lpips_weight * LPIPS].
Phase 2 (the next ``finetune_steps``): real images; loss = lpips_weight * LPIPS(G(E(x)), x) + mse_weight * MSE,
optionally plus a generated batch. Training stops at ``phase1_steps + finetune_steps`` whatever the trainer says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from autolabel.config.core import as_config
from autolabel.config.inversion import EncoderConfig, EncoderTrainConfig
from autolabel.errors import ConfigError, DataError
from autolabel.handsoff.encoder import InversionEncoder


def _images_from_batch(batch: Any) -> torch.Tensor:
    """Accept a tensor, a (images, ...) tuple/list, or a dict with ``image``/``images``."""
    if isinstance(batch, dict):
        for key in ("image", "images", "img"):
            if key in batch:
                return batch[key]
        raise DataError(f"batch dict has keys {sorted(batch)}; the encoder needs an 'image' entry")
    if isinstance(batch, (list, tuple)):
        return batch[0]
    return batch


class EncoderModule(pl.LightningModule):
    """Trains :class:`InversionEncoder` on a frozen generator (an object or a checkpoint path)."""

    def __init__(
        self,
        encoder: EncoderConfig | Mapping | None = None,
        train: EncoderTrainConfig | Mapping | None = None,
        *,
        generator: nn.Module | str | os.PathLike | None = None,
        lpips: nn.Module | None = None,
        generator_kwargs: dict | None = None,
        generator_path: str | None = None,
    ) -> None:
        super().__init__()
        enc_cfg, train_cfg = as_config(encoder, EncoderConfig), as_config(train, EncoderTrainConfig)
        if isinstance(generator, (str, os.PathLike)):
            generator_path = str(generator)
            generator = None
        if generator is None:
            generator = self._rebuild_generator(generator_kwargs, generator_path)
        if generator_kwargs is None:
            generator_kwargs = getattr(generator, "init_kwargs", None)
        self.save_hyperparameters(
            {
                "encoder": asdict(enc_cfg),
                "train": asdict(train_cfg),
                "generator_kwargs": generator_kwargs,
                "generator_path": generator_path,
            }  # fmt: skip
        )
        self.enc_cfg, self.train_cfg = enc_cfg, train_cfg
        self.generator = generator
        self.generator.requires_grad_(False)
        self.generator.eval()
        w_avg = generator.w_avg.detach().float()
        if not bool(w_avg.abs().sum() > 0):  # a fresh generator has no running average yet
            with torch.no_grad():
                w_avg = generator.mean_latent(4096).detach().float().reshape(-1)
        self.encoder = InversionEncoder(
            resolution=int(generator.resolution), num_ws=int(generator.num_ws), w_dim=int(generator.w_dim),
            img_channels=int(generator.img_channels), w_avg=w_avg, **enc_cfg.kwargs(),
        )  # fmt: skip
        self._lpips = [lpips]  # a list keeps LPIPS out of the state dict and the optimizer

    @staticmethod
    def _rebuild_generator(kwargs: dict | None, path: str | None) -> nn.Module:
        if kwargs is not None:
            from autolabel.gan import Generator

            return Generator(**kwargs)  # weights come from this module's state dict
        if path is not None:
            from autolabel.gan import load_generator

            return load_generator(path)
        raise ConfigError("EncoderModule needs a generator: pass a Generator object or a generator checkpoint path")

    # ------------------------------------------------------------------ plumbing
    def train(self, mode: bool = True) -> EncoderModule:
        """Switch train/eval mode but keep the frozen generator in eval mode."""
        super().train(mode)
        self.generator.eval()
        return self

    @property
    def lpips(self) -> nn.Module:
        """The injected (or lazily built, offline) frozen LPIPS network on this module's device."""
        if self._lpips[0] is None:
            from autolabel.handsoff.lpips_weights import build_lpips

            self._lpips[0] = build_lpips(self.train_cfg.lpips_net, self.train_cfg.lpips_weights)
        net = self._lpips[0].to(self.device)
        net.eval()
        net.requires_grad_(False)
        return net

    def phase(self, step: int | None = None) -> int:
        """1 while ``step < phase1_steps``, else 2."""
        step = self.global_step if step is None else step
        return 1 if step < self.train_cfg.phase1_steps else 2

    # ------------------------------------------------------------------ model
    def forward(self, images: torch.Tensor, generator: nn.Module | None = None) -> torch.Tensor:
        """Images -> W+ latents (``generator`` defaults to the module's own frozen generator)."""
        return self.encoder(images, self.generator if generator is None else generator)

    def sample_ws(self, batch: int) -> torch.Tensor:
        """Phase-1 latents: truncated samples broadcast to W+, mixed with a second latent at a random layer."""
        cfg, g = self.train_cfg, self.generator
        z = torch.randn(2 * batch, g.z_dim, device=self.device)
        w_avg = self.encoder.w_avg  # fp32 buffer; under 16-/bf16-mixed the mapping net returns half precision
        w = w_avg.lerp(g.mapping(z, truncation_psi=1.0).to(w_avg.dtype), cfg.truncation_psi)
        ws = w[:batch, None, :].repeat(1, g.num_ws, 1)
        if g.num_ws > 1 and cfg.style_mix_prob > 0:
            mix = torch.rand(batch, device=self.device) < cfg.style_mix_prob
            cut = torch.randint(1, g.num_ws, (batch,), device=self.device)
            later = torch.arange(g.num_ws, device=self.device)[None, :] >= cut[:, None]
            sel = (mix[:, None] & later)[..., None]
            ws = torch.where(sel, w[batch:, None, :].expand_as(ws), ws)
        return ws

    def _recon_losses(self, x: torch.Tensor, lpips_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor], list]:
        steps = self.encoder(x, self.generator, return_steps=True)
        total, logs = x.new_zeros(()), {}
        for ws_hat in steps:  # ReStyle: supervise every iteration (pyramid: one step)
            recon = self.generator.synthesis(ws_hat, noise_mode="const")
            mse = F.mse_loss(recon, x)
            loss = self.train_cfg.mse_weight * mse
            logs["img_mse"] = mse.detach()
            if lpips_weight > 0:
                lp = self.lpips(recon, x).mean()
                loss = loss + lpips_weight * lp
                logs["lpips"] = lp.detach()
            total = total + loss / len(steps)
        return total, logs, steps

    def _generated_loss(self, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            ws = self.sample_ws(batch)
            x = self.generator.synthesis(ws, noise_mode="const")
        loss, logs, steps = self._recon_losses(x, self.train_cfg.phase1_lpips_weight)
        lat = sum(F.mse_loss(s, ws) for s in steps) / len(steps)
        logs["latent_mse"] = lat.detach()
        return loss + self.train_cfg.latent_weight * lat, logs

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One step of phase 1 (generated) or phase 2 (real, capped)."""
        cfg = self.train_cfg
        if self.phase() == 1:
            loss, logs = self._generated_loss(cfg.batch_size)
        else:
            x = _images_from_batch(batch).to(self.device, torch.float32)
            g = self.generator
            if x.ndim != 4 or tuple(x.shape[1:]) != (g.img_channels, g.resolution, g.resolution):
                raise DataError(
                    f"real batch has shape {tuple(x.shape)}, expected [B, {g.img_channels}, {g.resolution}, {g.resolution}]"
                    "; resize the dataset to the generator resolution"
                )
            loss, logs = self._recon_losses(x, cfg.lpips_weight)[:2]
            if cfg.phase2_generated_fraction > 0 and float(torch.rand(())) < cfg.phase2_generated_fraction:
                gen_loss, gen_logs = self._generated_loss(x.shape[0])
                loss = loss + gen_loss
                logs["latent_mse"] = gen_logs["latent_mse"]
        if not torch.isfinite(loss):
            raise DataError(
                f"encoder loss became {loss.item()} at step {self.global_step}; lower train.lr or check inputs"
            )
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/phase", float(self.phase()))
        for key, val in logs.items():
            self.log(f"train/{key}", val)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """Hard cap: stop at ``phase1_steps + finetune_steps`` even if the trainer allows more."""
        if self.global_step >= self.train_cfg.max_steps:
            self.trainer.should_stop = True
            return -1
        return None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the encoder only (the generator is frozen)."""
        return torch.optim.Adam(self.encoder.parameters(), lr=self.train_cfg.lr, betas=(0.9, 0.999))


def load_encoder(path: str | os.PathLike, generator: nn.Module | None = None) -> EncoderModule:
    """Load a trained :class:`EncoderModule` checkpoint (CheckpointError when missing or foreign).

    ``generator``: a generator object to use instead of rebuilding it from the checkpoint's hyperparameters.
    """
    from autolabel.engine.checkpoint_io import load_lightning_module

    extra = {} if generator is None else {"generator": generator}
    module = load_lightning_module(EncoderModule, path, what="encoder checkpoint",
                                   hint="pass the last.ckpt written by `autolabel fit encoder`", **extra)  # fmt: skip
    module.eval()
    return module
