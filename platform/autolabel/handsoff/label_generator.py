"""HandsOff label generator: an ensemble of small per-pixel MLPs on hypercolumns (DatasetGAN style).

Tasks: ``segmentation`` (cross-entropy, majority vote, JS-divergence uncertainty), ``keypoints`` (Gaussian heatmap
regression, argmax + soft-argmax decoding) and ``depth`` (regression, members' std as uncertainty).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autolabel.errors import ConfigError, DataError

TASKS = ("segmentation", "keypoints", "depth")


class PixelMLP(nn.Module):
    """Linear(C,h1)-ReLU-BN-Linear(h1,h2)-ReLU-BN-Linear(h2,out), weights N(0, 0.02), biases 0."""

    def __init__(self, in_channels: int, out_channels: int, hidden: Sequence[int] = (256, 32), init_std: float = 0.02):
        super().__init__()
        h1, h2 = (int(h) for h in hidden)
        self.net = nn.Sequential(
            nn.Linear(in_channels, h1),
            nn.ReLU(),
            nn.BatchNorm1d(h1),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.BatchNorm1d(h2),
            nn.Linear(h2, out_channels),
        )
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, init_std)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x [P, C] -> [P, out]``."""
        return self.net(x)


def js_divergence(probs: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-pixel Jensen-Shannon divergence of member distributions ``probs [M, ..., K]``: H(mean p) - mean H(p_i)."""
    mean = probs.mean(0)
    h_mean = -(mean * (mean + eps).log()).sum(-1)
    h_each = -(probs * (probs + eps).log()).sum(-1).mean(0)
    return (h_mean - h_each).clamp_min(0.0)


# What an image's uncertainty score (image_uncertainty of the ensemble's per-pixel uncertainty) is, per task.
SCORE_MEANING = {
    "segmentation": "members' JS divergence, mean over its most uncertain 10% of pixels",
    "keypoints": "std of the members' heatmaps, mean over its most uncertain 10% of pixels",
    "depth": "std of the members' depth, mean over its most uncertain 10% of pixels",
}


def image_uncertainty(pixel_scores: Tensor, top_fraction: float = 0.1) -> Tensor:
    """Image score = mean of its top ``top_fraction`` pixel scores; ``pixel_scores [B, ...] -> [B]``."""
    flat = pixel_scores.reshape(pixel_scores.shape[0], -1).float()
    k = max(1, int(math.ceil(top_fraction * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean(1)


def majority_vote(labels: Tensor, n_classes: int) -> Tensor:
    """Per-pixel majority vote of member labels ``[M, ...]`` -> ``[...]`` (ties go to the lowest class index)."""
    votes = F.one_hot(labels.long(), n_classes).sum(0)
    return votes.argmax(-1)


def keypoint_heatmaps(coords: Tensor, resolution: int, sigma: float = 2.0, visible: Tensor | None = None) -> Tensor:
    """Gaussian heatmaps ``[B, K, R, R]`` (peak 1) from pixel coordinates ``coords [B, K, 2]`` (x, y); invisible -> 0."""
    if coords.ndim != 3 or coords.shape[-1] != 2:
        raise DataError(f"keypoints have shape {tuple(coords.shape)}: pass [B, K, 2] (x, y) pixel coordinates")
    if sigma <= 0:
        raise ConfigError(f"heatmap_sigma={sigma} must be > 0 (2 pixels is typical)")
    ax = torch.arange(resolution, dtype=torch.float32, device=coords.device)
    dx = (ax.view(1, 1, 1, -1) - coords[..., 0, None, None].float()) ** 2
    dy = (ax.view(1, 1, -1, 1) - coords[..., 1, None, None].float()) ** 2
    hm = torch.exp(-(dx + dy) / (2 * sigma**2))
    if visible is not None:
        hm = hm * visible.to(hm.dtype)[..., None, None]
    return hm


def heatmap_values(xy: Tensor, coords: Tensor, sigma: float = 2.0) -> Tensor:
    """Values ``[P, K]`` of the Gaussian heatmaps (peak 1) of keypoints ``coords [P, K, 2]`` at pixels ``xy [P, 2]``.

    The sparse counterpart of :func:`keypoint_heatmaps`: ``heatmap_values(xy, c, s)[p, k]`` equals
    ``keypoint_heatmaps(c[p:p+1], R, s)[0, k, y_p, x_p]``, without building ``[K, R, R]`` maps.
    """
    if sigma <= 0:
        raise ConfigError(f"heatmap_sigma={sigma} must be > 0 (2 pixels is typical)")
    d2 = ((xy[:, None, :].float() - coords.float()) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma**2))


def decode_keypoints(heatmaps: Tensor, refine: str = "gaussian", window: int = 1) -> tuple[Tensor, Tensor]:
    """Keypoint coordinates ``[B, K, 2]`` (x, y in pixels) and confidences ``[B, K]`` (peak value) from heatmaps.

    Integer argmax, then sub-pixel refinement around the peak: ``"gaussian"`` fits a parabola to the log-heatmap along
    x and y (exact for a Gaussian peak), ``"soft_argmax"`` takes the heatmap-weighted mean over the
    ``(2*window+1)^2`` neighbourhood, ``"none"`` keeps the integer argmax.
    """
    if heatmaps.ndim != 4:
        raise DataError(f"heatmaps have shape {tuple(heatmaps.shape)}: pass [B, K, H, W]")
    if refine not in ("gaussian", "soft_argmax", "none"):
        raise ConfigError(f"refine={refine!r} unknown: use gaussian, soft_argmax or none")
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, -1).float()
    conf, arg = flat.max(-1)
    py, px = arg // w, arg % w
    if refine == "none":
        return torch.stack([px.float(), py.float()], -1), conf

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        return torch.gather(flat, 2, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(b, k, -1)).reshape(yy.shape)

    if refine == "gaussian":
        eps = 1e-10
        c = at(py, px).clamp_min(eps).log()
        offs = []
        for lo_hi, pos, size in (((py, px - 1), (py, px + 1)), px, w), (((py - 1, px), (py + 1, px)), py, h):
            lo = at(*lo_hi[0]).clamp_min(eps).log()
            hi = at(*lo_hi[1]).clamp_min(eps).log()
            den = 2 * c - lo - hi
            d = torch.where(den > 1e-6, (hi - lo) / (2 * den.clamp_min(1e-6)), torch.zeros_like(den))
            inside = (pos > 0) & (pos < size - 1)
            offs.append(torch.where(inside, d.clamp(-0.5, 0.5), torch.zeros_like(d)))
        return torch.stack([px.float() + offs[0], py.float() + offs[1]], -1), conf

    o = torch.arange(-window, window + 1, device=heatmaps.device)
    yy = (py[..., None, None] + o.view(-1, 1)).clamp(0, h - 1)
    xx = (px[..., None, None] + o.view(1, -1)).clamp(0, w - 1)
    yy, xx = torch.broadcast_tensors(yy, xx)
    vals = at(yy, xx).clamp_min(0).reshape(b, k, -1)
    wsum = vals.sum(-1).clamp_min(1e-12)
    x = (vals * xx.reshape(b, k, -1).float()).sum(-1) / wsum
    y = (vals * yy.reshape(b, k, -1).float()).sum(-1) / wsum
    return torch.stack([x, y], -1), conf


class LabelGeneratorEnsemble(nn.Module):
    """``n_members`` :class:`PixelMLP` s mapping hypercolumns ``[P, C]`` to per-pixel outputs.

    Output width: ``n_classes`` logits (segmentation), ``n_keypoints`` heatmap values (keypoints) or 1 (depth).
    """

    def __init__(
        self,
        in_channels: int,
        task: str = "segmentation",
        n_classes: int | None = None,
        n_keypoints: int | None = None,
        n_members: int = 10,
        hidden: Sequence[int] = (256, 32),
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"task={task!r} unknown: use one of {', '.join(TASKS)}")
        if in_channels < 1:
            raise ConfigError(f"in_channels={in_channels} must be >= 1 (the hypercolumn width)")
        if n_members < 1:
            raise ConfigError(f"n_members={n_members} must be >= 1 (10 in the reference)")
        if len(hidden) != 2 or min(int(h) for h in hidden) < 1:
            raise ConfigError(f"hidden={list(hidden)} must be two positive widths, e.g. [256, 32]")
        if task == "segmentation":
            if n_classes is None or n_classes < 2:
                raise ConfigError(f"n_classes={n_classes}: segmentation needs >= 2 classes (background included)")
            out = int(n_classes)
        elif task == "keypoints":
            if n_keypoints is None or n_keypoints < 1:
                raise ConfigError(f"n_keypoints={n_keypoints}: keypoint task needs >= 1 keypoint")
            out = int(n_keypoints)
        else:
            out = 1
        self.task = task
        self.in_channels = int(in_channels)
        self.n_classes = int(n_classes) if n_classes is not None else None
        self.n_keypoints = int(n_keypoints) if n_keypoints is not None else None
        self.out_channels = out
        self.hidden = [int(h) for h in hidden]
        self.members = nn.ModuleList(PixelMLP(self.in_channels, out, self.hidden) for _ in range(n_members))

    @property
    def n_members(self) -> int:
        return len(self.members)

    def _check(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise DataError(
                f"hypercolumns have shape {tuple(x.shape)}, expected [P, {self.in_channels}]: use the same layers and "
                "generator the ensemble was trained with"
            )
        return x.float()

    def forward(self, x: Tensor) -> Tensor:
        """Member outputs ``[M, P, out]``."""
        x = self._check(x)
        return torch.stack([m(x) for m in self.members])

    @torch.no_grad()
    def predict(self, x: Tensor) -> dict[str, Tensor]:
        """Ensemble prediction for pixels ``x [P, C]``.

        segmentation: ``label [P]`` (majority vote), ``probs [P, K]`` (mean), ``uncertainty [P]`` (JS divergence);
        keypoints: ``heatmap [P, K]`` (members' mean), ``uncertainty [P]`` (members' std, averaged over keypoints);
        depth: ``depth [P]`` (mean), ``uncertainty [P]`` (members' std).
        """
        out = self(x)
        if self.task == "segmentation":
            probs = out.softmax(-1)
            return {
                "label": majority_vote(out.argmax(-1), self.out_channels),
                "probs": probs.mean(0),
                "uncertainty": js_divergence(probs),
            }
        std = out.std(0, unbiased=False)
        if self.task == "keypoints":
            return {"heatmap": out.mean(0), "uncertainty": std.mean(-1)}
        return {"depth": out.mean(0)[:, 0], "uncertainty": std[:, 0]}

    def member_losses(
        self, out: Tensor, target: Tensor, depth_loss: str = "l1", weight: Tensor | None = None
    ) -> Tensor:
        """Per-member losses ``[M]`` for member outputs ``[M, P, out]`` and targets (class ``[P]``, heatmap ``[P, K]``,
        depth ``[P]``). Keypoints: ``weight [P, K]`` (1 = visible, 0 = invisible) averages the squared error over the
        visible entries only, so an invisible keypoint trains nothing (0 when nothing in the batch is visible).
        Segmentation and depth: ``weight [P]`` (0 = ignored pixel, e.g. a void border) averages the per-pixel loss
        over the weighted pixels only."""
        if self.task == "segmentation":
            m, p, k = out.shape
            ce = F.cross_entropy(out.reshape(m * p, k), target.long().repeat(m), reduction="none").view(m, p)
            if weight is None:
                return ce.mean(1)
            w = weight.to(ce.dtype).unsqueeze(0)
            return (ce * w).sum(1) / w.sum(1).clamp_min(1.0)
        if self.task == "keypoints":
            se = (out.float() - target.float().unsqueeze(0)) ** 2
            if weight is None:
                return se.mean((1, 2))
            w = weight.to(se.dtype).unsqueeze(0)
            return (se * w).sum((1, 2)) / w.sum((1, 2)).clamp_min(1.0)
        diff = out[..., 0] - target.float().unsqueeze(0)
        if depth_loss not in ("l1", "l2"):
            raise ConfigError(f"depth_loss={depth_loss!r} unknown: use l1 or l2")
        err = diff.abs() if depth_loss == "l1" else diff**2
        if weight is None:
            return err.mean(1)
        w = weight.to(err.dtype).unsqueeze(0)
        return (err * w).sum(1) / w.sum(1).clamp_min(1.0)
