"""Dense-label metrics: confusion matrix, mIoU, pixel accuracy, PCK, NME and depth errors.

mIoU convention: the mean runs over ALL classes (background included) that occur in the ground truth or in
the prediction; classes absent from both have an undefined IoU (0/0) and are excluded (reported as NaN).
Depth errors clamp both prediction and ground truth to ``[min_depth, max_depth]`` (DESIGN 3.6: [1e-3, 80]).
"""

from __future__ import annotations

import torch

from autolabel.errors import DataError


def confusion_matrix(
    pred: torch.Tensor, gt: torch.Tensor, n_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Return the ``[n_classes, n_classes]`` int64 confusion matrix, rows = ground truth, cols = prediction."""
    if pred.shape != gt.shape:
        raise DataError(f"prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}: pass aligned maps")
    p = pred.reshape(-1).long()
    g = gt.reshape(-1).long()
    if ignore_index is not None:
        keep = g != ignore_index
        p, g = p[keep], g[keep]
    bad = (g < 0) | (g >= n_classes) | (p < 0) | (p >= n_classes)
    if bool(bad.any()):
        raise DataError(f"class index outside [0, {n_classes}) in prediction or ground truth: check n_classes")
    return torch.bincount(g * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def miou(conf: torch.Tensor) -> tuple[float, list[float]]:
    """Mean IoU over classes present in gt or pred, and per-class IoU (NaN for classes absent from both)."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    valid = union > 0
    mean = float(iou[valid].mean()) if bool(valid.any()) else float("nan")
    return mean, [float(v) for v in iou]


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Fraction of correctly labelled pixels."""
    total = conf.sum()
    return float(conf.diag().sum().double() / total) if int(total) > 0 else float("nan")


def _kp_dist(pred: torch.Tensor, gt: torch.Tensor, norm: torch.Tensor, visible: torch.Tensor | None):
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise DataError(f"keypoints must be [N,K,2] and equal shapes, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    norm = torch.as_tensor(norm, dtype=torch.float64).reshape(-1)
    if norm.numel() != pred.shape[0] or bool((norm <= 0).any()):
        raise DataError("norm must be [N] positive values (e.g. image diagonal or bbox size): fix the normalizer")
    d = (pred.double() - gt.double()).norm(dim=-1) / norm[:, None]
    vis = torch.ones_like(d, dtype=torch.bool) if visible is None else visible.bool().reshape(d.shape)
    return d, vis


def pck(
    pred: torch.Tensor,
    gt: torch.Tensor,
    norm: torch.Tensor,
    threshold: float = 0.1,
    visible: torch.Tensor | None = None,
) -> float:
    """Percentage of correct keypoints: share of visible keypoints with ``|pred-gt|/norm <= threshold``."""
    d, vis = _kp_dist(pred, gt, norm, visible)
    if not bool(vis.any()):
        return float("nan")
    return float((d[vis] <= threshold).double().mean())


def nme(pred: torch.Tensor, gt: torch.Tensor, norm: torch.Tensor, visible: torch.Tensor | None = None) -> float:
    """Normalized mean error: mean over visible keypoints of ``|pred-gt|/norm``."""
    d, vis = _kp_dist(pred, gt, norm, visible)
    return float(d[vis].mean()) if bool(vis.any()) else float("nan")


def depth_errors(
    pred: torch.Tensor, gt: torch.Tensor, min_depth: float = 1e-3, max_depth: float = 80.0
) -> dict[str, float]:
    """RMSE, RMSE-log, AbsRel, SqRel with both maps clamped to ``[min_depth, max_depth]``."""
    if pred.shape != gt.shape:
        raise DataError(f"depth prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}")
    p = pred.double().clamp(min_depth, max_depth).reshape(-1)
    g = gt.double().clamp(min_depth, max_depth).reshape(-1)
    if not bool(torch.isfinite(p).all() and torch.isfinite(g).all()):
        raise DataError("depth maps contain NaN: fix the inputs before computing depth errors")
    return {
        "rmse": float(((p - g) ** 2).mean().sqrt()),
        "rmse_log": float(((p.log() - g.log()) ** 2).mean().sqrt()),
        "abs_rel": float(((p - g).abs() / g).mean()),
        "sq_rel": float(((p - g) ** 2 / g).mean()),
    }
