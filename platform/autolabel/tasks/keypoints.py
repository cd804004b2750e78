"""Keypoint regression by integral heatmaps: a UNet trunk with one logit map per keypoint, decoded by soft-argmax.

Each keypoint's logit map is turned into a probability map over pixels (softmax); the keypoint is its expected
position (soft-argmax, "integral regression", Sun et al. 2018), so the net is trained on the quantity it is scored on:
an L1 loss on the coordinates (divided by the image size) plus a cross-entropy between the probability map and a
Gaussian target (``sigma`` pixels) that shapes the maps (``heatmap_weight``). Given the mean labeled shape, a
log-Gaussian prior around each keypoint's mean position is added to the logits, so an untrained net already answers
(about) the mean shape and training only has to learn the deviations from it.

Why not the previous recipe (MSE to Gaussian heatmaps, argmax decoding): with tens of keypoints and a few images the
all-zero map is a near-optimal MSE answer, so after a few hundred steps the maps are flat and the argmax lands
anywhere -- PCK far below the constant mean shape. Soft-argmax + coordinate loss has no such trivial minimum.

``evaluate_keypoints`` reports PCK at several thresholds and NME under three normalizers (see
:func:`autolabel.metrics.dense.keypoint_norms`): the image diagonal (``pck@t``, ``nme``), the keypoints' bounding box
(``pck_bbox@t``, ``nme_bbox``) and, when the eye keypoints are named, the inter-ocular distance (``pck_io@t``,
``nme_io``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from autolabel.errors import ConfigError
from autolabel.metrics.dense import NME, PCK
from autolabel.tasks.segmentation import UNet


def render_heatmaps(keypoints: torch.Tensor, height: int, width: int, sigma: float = 1.5) -> torch.Tensor:
    """Gaussian heatmaps ``[B, K, H, W]`` (peak 1) for keypoints ``[B, K, 2]`` in (x, y) pixels."""
    ys = torch.arange(height, dtype=keypoints.dtype, device=keypoints.device)
    xs = torch.arange(width, dtype=keypoints.dtype, device=keypoints.device)
    dx = (xs[None, None, None, :] - keypoints[..., 0, None, None]) ** 2
    dy = (ys[None, None, :, None] - keypoints[..., 1, None, None]) ** 2
    return torch.exp(-(dx + dy) / (2 * sigma**2))


def decode_heatmaps(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Keypoints ``[B, K, 2]`` (x, y): argmax, then soft-argmax over the 3x3 window (weights ``softmax(beta * h)``)."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, -1)
    idx = flat.argmax(-1)
    iy, ix = idx // w, idx % w
    offs = torch.tensor([-1, 0, 1], device=heatmaps.device)
    oy, ox = torch.meshgrid(offs, offs, indexing="ij")
    ny = (iy[..., None] + oy.reshape(-1)).clamp(0, h - 1)
    nx = (ix[..., None] + ox.reshape(-1)).clamp(0, w - 1)
    vals = torch.gather(flat, 2, ny * w + nx)
    # out-of-image neighbours were clamped onto border pixels: drop their duplicates by masking them out
    inside = (iy[..., None] + oy.reshape(-1) >= 0) & (iy[..., None] + oy.reshape(-1) < h)
    inside &= (ix[..., None] + ox.reshape(-1) >= 0) & (ix[..., None] + ox.reshape(-1) < w)
    wts = torch.softmax((beta * vals).masked_fill(~inside, float("-inf")), dim=-1)
    x = (wts * nx.to(heatmaps.dtype)).sum(-1)
    y = (wts * ny.to(heatmaps.dtype)).sum(-1)
    return torch.stack([x, y], dim=-1)


def soft_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keypoints [B, K, 2] (x, y) pixels, log-probabilities [B, K, H, W])``: the expected position under the
    softmax of each logit map over its pixels."""
    b, k, h, w = logits.shape
    logp = F.log_softmax(logits.reshape(b, k, -1).float(), dim=-1).reshape(b, k, h, w)
    p = logp.exp()
    xs = torch.arange(w, dtype=p.dtype, device=p.device)
    ys = torch.arange(h, dtype=p.dtype, device=p.device)
    x = (p.sum(-2) * xs).sum(-1)
    y = (p.sum(-1) * ys).sum(-1)
    return torch.stack([x, y], dim=-1), logp


class KeypointNet(nn.Module):
    """UNet trunk -> ``n_keypoints`` logit maps at input resolution (+ the mean-shape prior), decoded by soft-argmax.

    ``mean_shape`` ``[K, 2]`` is given in units of the image size (x / W, y / H in [0, 1]) so one net serves any
    resolution; ``prior_sigma`` is the prior's width in the same units (0: no prior).
    """

    def __init__(
        self,
        n_keypoints: int,
        in_channels: int = 3,
        base: int = 16,
        depth: int = 3,
        mean_shape: torch.Tensor | Sequence | None = None,
        prior_sigma: float = 0.15,
    ):
        super().__init__()
        if n_keypoints < 1:
            raise ConfigError(f"n_keypoints={n_keypoints}: need at least one keypoint")
        if prior_sigma < 0:
            raise ConfigError(f"prior_sigma={prior_sigma} must be >= 0 (0: no mean-shape prior)")
        self.unet = UNet(in_channels, n_keypoints, base, depth)
        ms = torch.full((n_keypoints, 2), 0.5) if mean_shape is None else torch.as_tensor(mean_shape).float()
        if ms.shape != (n_keypoints, 2):
            raise ConfigError(f"mean_shape has shape {tuple(ms.shape)}, expected ({n_keypoints}, 2)")
        self.register_buffer("mean_shape", ms.clone())
        self.prior_sigma = float(prior_sigma) if mean_shape is not None else 0.0

    def prior(self, h: int, w: int) -> torch.Tensor:
        """Log-Gaussian prior ``[1, K, H, W]`` around the mean shape (zeros without one)."""
        if self.prior_sigma <= 0:
            return torch.zeros(1, 1, h, w, device=self.mean_shape.device)
        xs = (torch.arange(w, device=self.mean_shape.device) + 0.5) / w
        ys = (torch.arange(h, device=self.mean_shape.device) + 0.5) / h
        dx = (xs[None, None, :] - self.mean_shape[:, 0, None, None]) ** 2
        dy = (ys[None, :, None] - self.mean_shape[:, 1, None, None]) ** 2
        return (-(dx + dy) / (2 * self.prior_sigma**2))[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> logit maps ``[B, K, H, W]`` (prior included)."""
        return self.unet(x) + self.prior(*x.shape[-2:]).to(x.dtype)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded keypoints ``[B, K, 2]`` in (x, y) pixels."""
        return soft_argmax(self(x))[0]


def keypoint_loss(
    logits: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor, sigma: float, heatmap_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, decoded keypoints)``: L1 on coordinates / image size + ``heatmap_weight`` x cross-entropy to a
    normalized Gaussian target, both over visible keypoints only."""
    h, w = logits.shape[-2:]
    pred, logp = soft_argmax(logits)
    vis = visible.to(pred.dtype)
    n = vis.sum().clamp_min(1.0)
    coord = ((pred - keypoints.to(pred.dtype)).abs().sum(-1) / max(h, w) * vis).sum() / n
    loss = coord
    if heatmap_weight > 0:
        target = render_heatmaps(keypoints.to(pred.dtype), h, w, sigma)
        target = target / target.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        ce = -(target * logp).sum(dim=(-2, -1))
        loss = loss + heatmap_weight * (ce * vis).sum() / n
    return loss, pred


@torch.no_grad()
def predict_keypoints(model: nn.Module, folder, batch_size: int = 16) -> tuple[torch.Tensor, ...]:
    """``(pred, gt, visible)`` over ``folder`` for a model with ``predict(images) -> [B, K, 2]``."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    ps, gs, vs = [], [], []
    for batch in DataLoader(folder, batch_size):
        ps.append(model.predict(batch["image"].to(dev)).cpu())
        gs.append(batch["keypoints"])
        vs.append(batch["visible"])
    model.train(was)
    return torch.cat(ps), torch.cat(gs), torch.cat(vs)


def keypoint_scores(
    pred: torch.Tensor,
    gt: torch.Tensor,
    visible: torch.Tensor,
    image_hw: tuple[int, int],
    thresholds: Sequence[float] = (0.1, 0.05),
    eye_keypoints: Sequence[int] | None = None,
) -> dict[str, float]:
    """PCK at each threshold and NME, normalized by the image diagonal (``pck@t``, ``nme``), the keypoints' bounding
    box (``pck_bbox@t``, ``nme_bbox``) and, with ``eye_keypoints``, the inter-ocular distance (``pck_io@t``,
    ``nme_io``)."""
    out: dict[str, float] = {}
    norms = [("diagonal", ""), ("bbox", "_bbox")] + ([("interocular", "_io")] if eye_keypoints else [])
    for norm, suffix in norms:
        for t in thresholds:
            m = PCK(t, norm, eye_keypoints)
            m.update(pred, gt, visible, image_hw)
            out[f"pck{suffix}@{t:g}"] = float(m.compute())
        m = NME(norm, eye_keypoints)
        m.update(pred, gt, visible, image_hw)
        out[f"nme{suffix}"] = float(m.compute())
    return out


def evaluate_keypoints(
    model: nn.Module,
    folder,
    batch_size: int = 16,
    threshold: float | None = None,
    per_keypoint: bool = False,
    thresholds: Sequence[float] = (0.1, 0.05),
    eye_keypoints: Sequence[int] | None = None,
) -> dict:
    """Scores of :func:`keypoint_scores` on ``folder`` (``threshold`` adds one more PCK threshold).

    ``per_keypoint=True`` adds ``"per_keypoint_pck"``: one PCK (diagonal, first threshold) per keypoint index (NaN
    where it is never visible).
    """
    if getattr(folder, "task", "keypoints") != "keypoints":
        raise ConfigError(f"evaluate_keypoints needs a keypoints folder, got task={folder.task}")
    ts = list(dict.fromkeys([*([threshold] if threshold is not None else []), *thresholds]))
    p, g, v = predict_keypoints(model, folder, batch_size)
    hw = tuple(folder[0]["image"].shape[-2:])
    out: dict = keypoint_scores(p, g, v, hw, ts, eye_keypoints)
    if per_keypoint:
        per = []
        for k in range(p.shape[1]):
            m = PCK(ts[0], "diagonal")
            m.update(p[:, k : k + 1], g[:, k : k + 1], v[:, k : k + 1], hw)
            per.append(float(m.compute()))
        out["per_keypoint_pck"] = per
    return out
