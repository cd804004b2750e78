"""StyleGAN2 losses: non-saturating logistic loss, lazy R1, path-length regularization."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def d_logistic_loss(real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """Discriminator logistic loss: softplus(-D(x)) + softplus(D(G(z)))."""
    return F.softplus(-real_pred.float()).mean() + F.softplus(fake_pred.float()).mean()


def g_nonsaturating_loss(fake_pred: Tensor) -> Tensor:
    """Non-saturating generator loss: softplus(-D(G(z)))."""
    return F.softplus(-fake_pred.float()).mean()


def r1_penalty(real_pred: Tensor, real_img: Tensor) -> Tensor:
    """R1: mean over the batch of ||dD(x)/dx||^2 (graph kept so it can be backpropagated). ``real_img`` needs grad."""
    (grad,) = torch.autograd.grad(real_pred.float().sum(), real_img, create_graph=True)
    return grad.float().pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def path_length_penalty(
    fake_img: Tensor, latents: Tensor, mean_path_length: Tensor | float, decay: float = 0.01
) -> tuple[Tensor, Tensor, Tensor]:
    """Path-length regularization. Returns ``(penalty, new_mean_path_length, path_lengths.mean())``."""
    noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    (grad,) = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    lengths = torch.sqrt(grad.float().pow(2).sum(2).mean(1) + 1e-12)
    mean = torch.as_tensor(mean_path_length, dtype=lengths.dtype, device=lengths.device)
    new_mean = mean + decay * (lengths.mean().detach() - mean)
    return (lengths - new_mean).pow(2).mean(), new_mean.detach(), lengths.mean().detach()
