"""An offline GAN quality metric: Fréchet distance and KID on frozen VGG16 features, logged during training.

**This is not Inception FID.** The features are the spatially averaged relu5_3 (or the deepest tapped) activations of
the ImageNet VGG16 that LPIPS uses (loaded from a local file, see :mod:`autolabel.backbones`), computed at the GAN's
resolution, so the numbers are not comparable to published FIDs -- only to each other, and to the **real-vs-real
reference** logged beside them: the same distance between two disjoint halves of the training images. A generator
whose distance approaches that reference draws images whose VGG statistics are as close to the real half as the other
real half is. Both distances use the same number of images per side (the finite-sample bias is then the same).

:class:`GANQualityCallback` evaluates ``g_ema`` every ``every_kimg`` thousand images (fixed latents, so the curve is not
sampling noise), writes ``quality.json`` (the curve) and a sample grid per evaluation next to the checkpoints, saves
``checkpoints/best.ckpt`` whenever the distance improves, and (``keep_best``) loads the best g_ema back at the end.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from autolabel.backbones import FrozenFeatures
from autolabel.data.images import sample_images


def frechet_distance(feats_a: np.ndarray | Tensor, feats_b: np.ndarray | Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D]:
    ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, in float64. The trace of the matrix square root is the
    sum of the square roots of the eigenvalues of ``S_a S_b`` (real and >= 0 for covariance matrices; round-off
    clipped)."""
    a, b = _f64(feats_a), _f64(feats_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eig = np.linalg.eigvals(cov_a @ cov_b)
    tr_sqrt = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)


def kernel_inception_distance(feats_a: np.ndarray | Tensor, feats_b: np.ndarray | Tensor, n_subsets: int = 10,
                              subset_size: int = 1000, seed: int = 0) -> float:  # fmt: skip
    """KID (Bińkowski et al. 2018) on any features: the unbiased MMD^2 with the cubic polynomial kernel
    ``(x.y / D + 1)^3``, averaged over ``n_subsets`` random subsets of ``min(subset_size, N_a, N_b)`` per side.
    Unbiased, so near 0 (and possibly negative) for two samples of one distribution."""
    a, b = _f64(feats_a), _f64(feats_b)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = m * (m - 1)
        vals.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())
    return float(np.mean(vals))


def _f64(x: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


class VGGStatsFeatures(torch.nn.Module):
    """Images in [-1, 1] -> [B, 512] spatially averaged deepest-tap activations of the frozen VGG16 (the metric's
    features). Inputs smaller than 32 px are upsampled to 32 so relu5_3 keeps at least 2x2 positions."""

    def __init__(self, weights: str | os.PathLike | None = None, random_backbone: bool = False, net: str = "vgg"):
        super().__init__()
        self.backbone = FrozenFeatures(net, 5, weights=weights, random_backbone=random_backbone)

    @torch.no_grad()
    def forward(self, img: Tensor) -> Tensor:
        if img.shape[-1] < 32:
            img = torch.nn.functional.interpolate(img.float(), size=(32, 32), mode="bilinear", align_corners=False)
        return self.backbone(img.float())[-1].mean(dim=(2, 3))


@torch.no_grad()
def embed(extractor: torch.nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """Features of ``images`` [N, C, H, W] in [-1, 1], in batches, on the extractor's device, returned on the CPU."""
    dev = next(iter(extractor.buffers())).device
    return torch.cat([extractor(images[i : i + batch_size].to(dev)).cpu() for i in range(0, len(images), batch_size)])


class GANQualityCallback(pl.Callback):
    """Every ``every_kimg`` (and at the first step and the end): FD and KID of ``n`` fixed-latent g_ema samples vs
    real half A, with the real-half-B-vs-A reference; logs ``quality/fd_vgg``, ``quality/kid_vgg``,
    ``quality/fd_vgg_real`` and ``quality/kid_vgg_real``; keeps ``best.ckpt``; see the module docstring."""

    def __init__(self, every_kimg: float, n: int = 500, weights: str | os.PathLike | None = None,
                 random_backbone: bool = False, keep_best: bool = True, seed: int = 0, grid: int = 16):  # fmt: skip
        super().__init__()
        self.every_kimg, self.n_req, self.keep_best, self.seed, self.grid = (
            float(every_kimg),
            int(n),
            keep_best,
            seed,
            grid,
        )
        self.weights, self.random_backbone = weights, random_backbone
        self.history: list[dict] = []
        self.best: float = math.inf
        self.best_path: Path | None = None
        self._next_kimg = 0.0

    # ------------------------------------------------------------------ setup
    def _real_images(self, trainer: pl.Trainer) -> Tensor:
        dm = trainer.datamodule
        ds = getattr(dm, "dataset", None) if dm is not None else None
        if ds is None:
            ds = trainer.train_dataloader.dataset
        self.n = max(1, min(self.n_req, len(ds) // 2))
        return sample_images(ds, 2 * self.n, self.seed)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.extractor = VGGStatsFeatures(self.weights, self.random_backbone).to(pl_module.device)
        real = self._real_images(trainer)
        feats = embed(self.extractor, real)
        self.real_a, self.real_b = feats[: self.n], feats[self.n : 2 * self.n]
        self.ref_fd = frechet_distance(self.real_b, self.real_a)
        self.ref_kid = kernel_inception_distance(self.real_b, self.real_a)
        self.z = torch.randn(self.n, pl_module.g_ema.z_dim, generator=torch.Generator().manual_seed(self.seed + 1))
        self.out_dir = Path(trainer.default_root_dir)
        ck = trainer.checkpoint_callback
        self.ckpt_dir = Path(ck.dirpath) if ck is not None and ck.dirpath else self.out_dir / "checkpoints"
        if self.best < math.inf and (self.ckpt_dir / "best.ckpt").is_file():
            self.best_path = self.ckpt_dir / "best.ckpt"
        state = self.history[-1] if self.history else None
        self._next_kimg = state["kimg"] + self.every_kimg if state else 0.0  # resumed: continue the schedule

    # ------------------------------------------------------------------ evaluation
    def _kimg(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
        return int(pl_module.n_iter) * self._batch(trainer) * trainer.world_size / 1000.0

    @staticmethod
    def _batch(trainer: pl.Trainer) -> int:
        dl = trainer.train_dataloader
        return int(getattr(dl, "batch_size", None) or 1)

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        g = pl_module.g_ema
        fakes = []
        for i in range(0, self.n, 64):
            z = self.z[i : i + 64].to(pl_module.device)
            fakes.append(g(z, truncation_psi=1.0, noise_mode="const").float().clamp(-1, 1).cpu())
        fake = torch.cat(fakes)
        feats = embed(self.extractor, fake)
        kimg = self._kimg(trainer, pl_module)
        rec = {"kimg": round(kimg, 4), "step": int(pl_module.n_iter), "fd_vgg": frechet_distance(feats, self.real_a),
               "kid_vgg": kernel_inception_distance(feats, self.real_a), "fd_vgg_real": self.ref_fd,
               "kid_vgg_real": self.ref_kid, "n": self.n}  # fmt: skip
        self.history.append(rec)
        if trainer.is_global_zero:
            from torchvision.utils import save_image

            grid_dir = self.out_dir / "quality"
            grid_dir.mkdir(parents=True, exist_ok=True)
            nrow = max(1, int(math.sqrt(self.grid)))
            save_image(
                (fake[: self.grid] + 1) / 2, grid_dir / f"samples_kimg{kimg:09.3f}_step{rec['step']:07d}.png", nrow=nrow
            )
            tmp = grid_dir / "quality.json.tmp"
            tmp.write_text(json.dumps(self.history, indent=1))
            os.replace(tmp, grid_dir / "quality.json")
        if trainer.logger is not None:
            trainer.logger.log_metrics({f"quality/{k}": v for k, v in rec.items() if k not in ("step", "n")},
                                       step=trainer.global_step)  # fmt: skip
        if rec["fd_vgg"] < self.best:
            self.best = rec["fd_vgg"]
            self.best_path = self.ckpt_dir / "best.ckpt"
            trainer.save_checkpoint(self.best_path, weights_only=False)
        return rec

    @staticmethod
    def _last_batch(trainer: pl.Trainer) -> bool:
        """The run's final batch when it ends by ``max_epochs`` (as every GAN stage does): evaluated there, before the
        epoch-end ``last.ckpt``, the final record is part of the checkpoint -- so a finished run fitted again (resume
        after a kill, whose training loop Lightning skips) holds the same history as the uninterrupted one."""
        max_epochs = trainer.max_epochs
        return bool(trainer.is_last_batch and max_epochs is not None and 0 <= max_epochs <= trainer.current_epoch + 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._kimg(trainer, pl_module) >= self._next_kimg or self._last_batch(trainer):
            self.evaluate(trainer, pl_module)
            while self._next_kimg <= self._kimg(trainer, pl_module):
                self._next_kimg += self.every_kimg

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.history or self.history[-1]["step"] != int(pl_module.n_iter):
            self.evaluate(trainer, pl_module)  # ended early or by max_steps
        self.load_best(pl_module)

    def load_best(self, pl_module: pl.LightningModule) -> None:
        """With ``keep_best``: load the best snapshot's g_ema into ``pl_module`` (no-op before any snapshot)."""
        if self.keep_best and self.best_path is not None and self.best_path.is_file():
            from autolabel.engine.checkpoint_io import load_checkpoint

            ckpt = load_checkpoint(self.best_path, map_location=pl_module.device, what="best GAN snapshot")
            sd = {k[len("g_ema.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("g_ema.")}
            pl_module.g_ema.load_state_dict(sd)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        self.best = float(state_dict.get("best", math.inf))
