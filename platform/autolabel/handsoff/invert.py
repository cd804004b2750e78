"""Invert images into the generator's W+ space: encoder pass, then optional per-image latent refinement."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from autolabel.errors import ConfigError, DataError


def cosine_lr(step: int, total: int, peak: float, warmup: float = 0.05) -> float:
    """Learning rate at ``step`` of ``total``: linear warm-up over ``warmup`` of the run, then cosine decay to 0."""
    t = step / max(total, 1)
    ramp = min(1.0, t / warmup) if warmup > 0 else 1.0
    return peak * ramp * 0.5 * (1.0 + math.cos(math.pi * t))


def _per_image_terms(
    generator: nn.Module, ws: torch.Tensor, images: torch.Tensor, lpips: nn.Module | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    recon = generator.synthesis(ws, noise_mode="const")
    mse = F.mse_loss(recon, images, reduction="none").flatten(1).mean(1)
    lp = lpips(recon, images).reshape(-1) if lpips is not None else None
    return recon, mse, lp


def invert_images(
    encoder: nn.Module,
    generator: nn.Module,
    images: torch.Tensor,
    *,
    refine_steps: int = 0,
    lr: float = 0.1,
    lpips: nn.Module | Callable | None = None,
    lpips_weight: float = 10.0,
    mse_weight: float = 1.0,
    latent_weight: float = 1.0,
    progress: bool = True,
) -> dict[str, torch.Tensor | None]:
    """Encode ``images`` [B, C, R, R] in [-1, 1] to W+ and optionally refine each latent.

    Refinement: ``refine_steps`` Adam steps on loss = lpips_weight * LPIPS + mse_weight * MSE
    + latent_weight * mean over layers of ||w - w_enc||^2, cosine lr peaking at ``lr``; per image the latent
    with the lowest loss seen (the encoder's included) is returned, so refinement never makes it worse.
    Everything runs on the generator's device (the encoder and LPIPS net must be there too; ``images`` are moved).
    The generator and encoder are not changed. Returns ``ws`` [B, num_ws, w_dim], ``recon`` [B, C, R, R],
    ``lpips`` [B] (None without an LPIPS net) and ``mse`` [B].
    """
    if refine_steps < 0 or lr <= 0:
        raise ConfigError(f"refine_steps={refine_steps} must be >= 0 and lr={lr} > 0 (the reference uses 500 and 0.1)")
    want = (int(generator.img_channels), int(generator.resolution), int(generator.resolution))
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise DataError(
            f"images have shape {tuple(images.shape)}, expected [B, {want[0]}, {want[1]}, {want[2]}]; resize them"
        )
    if not torch.isfinite(images).all():
        raise DataError("images contain NaN/inf values; clean them (expected range [-1, 1])")
    device = next(generator.parameters()).device
    for name, mod in (("encoder", encoder), ("lpips", lpips)):
        p = next(mod.parameters(), None) if isinstance(mod, nn.Module) else None
        if p is not None and p.device != device:
            raise ConfigError(f"the {name} is on {p.device} but the generator on {device}: move both to one device "
                              "(inversion runs on the generator's device, e.g. the GPU)")  # fmt: skip
    images = images.to(device, torch.float32)
    grad_state = [p.requires_grad for p in generator.parameters()]
    enc_training, gen_training = encoder.training, generator.training
    generator.requires_grad_(False).eval()
    encoder.eval()
    if isinstance(lpips, nn.Module):
        lpips.eval()
        lpips.requires_grad_(False)
    try:
        with torch.no_grad():
            w_enc = encoder(images, generator).detach().float()

        def objective(ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
            recon, mse, lp = _per_image_terms(generator, ws, images, lpips)
            loss = mse_weight * mse + latent_weight * (ws - w_enc).pow(2).sum(-1).mean(-1)
            if lp is not None:
                loss = loss + lpips_weight * lp
            return loss, recon, mse, lp

        best_ws = w_enc.clone()
        if refine_steps > 0:
            ws = w_enc.clone().requires_grad_(True)
            opt = torch.optim.Adam([ws], lr=lr, betas=(0.9, 0.999))
            best_loss = torch.full((images.shape[0],), float("inf"), device=device)
            for step in tqdm(range(refine_steps + 1), desc="refine latents", disable=not progress, leave=False):
                loss, *_ = objective(ws)
                with torch.no_grad():  # the loss of the current latents, before this step's update
                    better = loss.detach() < best_loss
                    best_loss = torch.where(better, loss.detach(), best_loss)
                    best_ws[better] = ws.detach()[better]
                if step == refine_steps:
                    break
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(step, refine_steps, lr)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
        with torch.no_grad():
            _, recon, mse, lp = objective(best_ws)
    finally:
        for p, g in zip(generator.parameters(), grad_state, strict=True):
            p.requires_grad_(g)
        generator.train(gen_training)
        encoder.train(enc_training)
    return {"ws": best_ws, "recon": recon, "lpips": lp, "mse": mse}


@torch.no_grad()
def latent_spread(ws: torch.Tensor, generator: nn.Module, n_sampled: int = 256, seed: int = 0) -> dict[str, float]:
    """How far apart inverted codes are, beside how far apart the GAN's own latents are: an encoder that inverts every
    image to one "mean" code has ``ratio`` near 0; one that keeps images as distinct as random samples has ~1.

    ``inverted``: mean pairwise L2 distance between the W+ codes ``ws`` [N, num_ws, w_dim] (per layer, averaged over
    layers); ``sampled``: the same for ``n_sampled`` latents mapped from z ~ N(0, I) (untruncated, one w per sample on
    every layer, fixed ``seed``); ``ratio`` = inverted / sampled.
    """

    def spread(x: torch.Tensor) -> float:
        x = x.float().transpose(0, 1)  # [num_ws, N, w_dim]
        n = x.shape[1]
        if n < 2:
            return 0.0
        d = torch.cdist(x, x)  # [num_ws, N, N]
        return float(d.sum() / (x.shape[0] * n * (n - 1)))

    g = torch.Generator().manual_seed(seed)
    dev = next(generator.parameters()).device
    z = torch.randn(n_sampled, generator.z_dim, generator=g).to(dev)
    w = generator.mapping(z).unsqueeze(1).repeat(1, ws.shape[1], 1)
    inv, ref = spread(ws.to(dev)), spread(w)
    return {"inverted": inv, "sampled": ref, "ratio": inv / max(ref, 1e-12)}


def reconstruction_weights(images: torch.Tensor, recon: torch.Tensor, resolution: int, scale: float) -> torch.Tensor:
    """Per-pixel trust in an inversion, ``[N, R, R]`` in (0, 1]: ``exp(-e / (scale * median(e)))``, where ``e`` is
    the squared error between each image and its reconstruction (channel mean, area-averaged onto the ``resolution``
    grid) and the median runs over every pixel of every image. Where the GAN's reconstruction misses the photo, the
    photo's label may not fit the generated content that the label generator learns from; ``scale`` sets how fast
    trust falls (1: a pixel with the median error weighs exp(-1) = 0.37)."""
    if images.shape != recon.shape or images.ndim != 4:
        raise DataError(f"images {tuple(images.shape)} and reconstructions {tuple(recon.shape)}: pass two equal "
                        "[N, C, H, W] batches")  # fmt: skip
    if not scale > 0:
        raise ConfigError(f"scale={scale} must be > 0 (larger: pixels the inversion misses keep more weight)")
    err = ((images.float() - recon.float()) ** 2).mean(1, keepdim=True)
    if err.shape[-2:] != (resolution, resolution):
        err = F.interpolate(err, size=(resolution, resolution), mode="area")
    err = err[:, 0]
    return torch.exp(-err / (scale * err.median().clamp_min(1e-12)))
