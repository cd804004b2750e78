"""Dense-label metrics: confusion matrix, mIoU, pixel accuracy, PCK, NME and depth errors.

mIoU convention: the mean runs over ALL classes (background included) that occur in the ground truth or in
the prediction; classes absent from both have an undefined IoU (0/0) and are excluded (reported as NaN).
Depth errors clamp both prediction and ground truth to ``[min_depth, max_depth]`` (DESIGN 3.6: [1e-3, 80]).

Keypoint errors are distances divided by a per-image normalizer (:func:`keypoint_norms`): the image diagonal, the
ground-truth keypoints' bounding box (``sqrt(w * h)`` of the visible keypoints, ``max(w, h)`` when they are collinear)
or the inter-ocular distance (the two eye keypoints the user names). Images whose normalizer is undefined (fewer than
two visible keypoints, an invisible eye) are left out of that metric.

The ``torchmetrics.Metric`` classes at the end (:class:`MeanIoU`, :class:`PCK`, :class:`NME`, :class:`DepthRMSE`)
accumulate sums whose ``dist_reduce_fx`` is ``"sum"``, so under DDP ``compute()`` returns the value over every rank's
share of the data -- exactly what one process computes on all of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from autolabel.errors import ConfigError, DataError

KEYPOINT_NORMS = ("diagonal", "bbox", "interocular")


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


def keypoint_norms(
    gt: torch.Tensor,
    visible: torch.Tensor | None,
    mode: str,
    image_hw: tuple[int, int] | None = None,
    eyes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-image normalizer ``[N]`` (float64; NaN where undefined) for keypoints ``gt`` ``[N, K, 2]``.

    ``diagonal``: ``sqrt(H^2 + W^2)`` of ``image_hw``; ``bbox``: ``sqrt(w * h)`` of the visible keypoints' box
    (``max(w, h)`` when it has no area; NaN with fewer than two distinct visible points); ``interocular``: distance
    between keypoints ``eyes = (i, j)`` (NaN when either is invisible or they coincide).
    """
    n = gt.shape[0]
    vis = torch.ones(gt.shape[:2], dtype=torch.bool) if visible is None else visible.bool().reshape(gt.shape[:2])
    g = gt.double().cpu()
    vis = vis.cpu()
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    if mode == "diagonal":
        if image_hw is None:
            raise ConfigError("keypoint norm 'diagonal' needs the image size: pass image_hw=(H, W)")
        return torch.full((n,), math.hypot(*image_hw), dtype=torch.float64)
    if mode == "bbox":
        big = torch.tensor(float("inf"), dtype=torch.float64)
        lo = torch.where(vis[..., None], g, big).amin(1)
        hi = torch.where(vis[..., None], g, -big).amax(1)
        wh = (hi - lo).clamp_min(0)
        area = (wh[:, 0] * wh[:, 1]).sqrt()
        side = torch.where(area > 0, area, wh.amax(1))
        return torch.where((vis.sum(1) >= 2) & (side > 0), side, nan)
    if mode == "interocular":
        if eyes is None or len(eyes) != 2 or not all(0 <= int(e) < gt.shape[1] for e in eyes):
            raise ConfigError(f"eye_keypoints={eyes}: name the two eye keypoints, e.g. eye_keypoints=[36,45]")
        i, j = int(eyes[0]), int(eyes[1])
        d = (g[:, i] - g[:, j]).norm(dim=-1)
        return torch.where(vis[:, i] & vis[:, j] & (d > 0), d, nan)
    raise ConfigError(f"keypoint norm {mode!r}: use one of {', '.join(KEYPOINT_NORMS)}")


# ------------------------------------------------------------------------------ torchmetrics (synced across ranks)
class MeanIoU(MulticlassConfusionMatrix):
    """mIoU from torchmetrics' (rank-synchronized) confusion matrix, with this module's NaN convention (:func:`miou`).

    ``update(pred, target)`` takes class maps ``[B, H, W]`` (or logits ``[B, K, H, W]``); pixels whose target is
    ``ignore_index`` are skipped. ``compute()`` returns the mIoU; :meth:`pixel_accuracy` and :meth:`per_class` read
    the same synchronized matrix.
    """

    def __init__(self, n_classes: int, ignore_index: int | None = 255, **kwargs) -> None:
        if n_classes < 1:
            raise ConfigError(f"n_classes={n_classes}: need at least one class")
        super().__init__(num_classes=n_classes, ignore_index=ignore_index, validate_args=False, **kwargs)
        self.n_classes = n_classes

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(1)
        self.confmat += confusion_matrix(preds, target, self.n_classes, ignore_index=self.ignore_index).to(
            self.confmat.device
        )

    def compute(self) -> torch.Tensor:
        return torch.tensor(miou(self.confmat)[0], dtype=torch.float64)

    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.confmat)

    def per_class(self) -> list[float]:
        return miou(self.confmat)[1]


class _KeypointMetric(Metric):
    full_state_update = False

    def __init__(self, norm: str = "diagonal", eyes: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if norm not in KEYPOINT_NORMS:
            raise ConfigError(f"keypoint norm {norm!r}: use one of {', '.join(KEYPOINT_NORMS)}")
        if norm == "interocular" and (eyes is None or len(eyes) != 2):
            raise ConfigError("the interocular norm needs the two eye keypoints: set eye_keypoints=[i,j]")
        self.norm, self.eyes = norm, (None if eyes is None else [int(e) for e in eyes])
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _dist(self, pred, gt, visible, image_hw):
        if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
            raise DataError(f"keypoints must be [N,K,2] and equal shapes, got {tuple(pred.shape)}, {tuple(gt.shape)}")
        vis = torch.ones(gt.shape[:2], dtype=torch.bool) if visible is None else visible.bool().cpu()
        norm = keypoint_norms(gt, vis, self.norm, image_hw, self.eyes)
        d = (pred.double().cpu() - gt.double().cpu()).norm(dim=-1) / norm[:, None]
        return d[vis & torch.isfinite(norm)[:, None]]

    def compute(self) -> torch.Tensor:
        return self.total / self.count if float(self.count) > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class PCK(_KeypointMetric):
    """Share of visible keypoints within ``threshold`` x the image's normalizer (see :func:`keypoint_norms`)."""

    def __init__(self, threshold: float = 0.1, norm: str = "diagonal", eyes: Sequence[int] | None = None, **kw):
        super().__init__(norm, eyes, **kw)
        if not threshold > 0:
            raise ConfigError(f"pck threshold={threshold} must be > 0")
        self.threshold = float(threshold)

    def update(self, pred, gt, visible=None, image_hw: tuple[int, int] | None = None) -> None:
        d = self._dist(pred, gt, visible, image_hw)
        self.total += (d <= self.threshold).sum().to(self.total)
        self.count += float(d.numel())


class NME(_KeypointMetric):
    """Mean over visible keypoints of ``|pred - gt| / normalizer`` (see :func:`keypoint_norms`)."""

    def update(self, pred, gt, visible=None, image_hw: tuple[int, int] | None = None) -> None:
        d = self._dist(pred, gt, visible, image_hw)
        self.total += d.sum().to(self.total)
        self.count += float(d.numel())


class DepthRMSE(Metric):
    """Root mean squared depth error over all pixels (optionally clamped to ``[min_depth, max_depth]``)."""

    full_state_update = False

    def __init__(self, min_depth: float | None = None, max_depth: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_depth, self.max_depth = min_depth, max_depth
        self.add_state("sq", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        p, g = pred.double(), gt.double()
        if self.min_depth is not None or self.max_depth is not None:
            p, g = p.clamp(self.min_depth, self.max_depth), g.clamp(self.min_depth, self.max_depth)
        self.sq += ((p - g) ** 2).sum().to(self.sq)
        self.count += float(p.numel())

    def compute(self) -> torch.Tensor:
        return (self.sq / self.count).sqrt() if float(self.count) > 0 else torch.tensor(float("nan"))
