"""Right-by-default edge thresholds: calibrate LANDER's link probabilities on identities the GNN never saw.

LANDER's link probabilities bunch up in a narrow band that moves with the data and the training length, so no fixed
tau works across datasets (a knife edge: 0.5 may give pairwise F 0.83 where 0.6 gives 0.34). ``fit hilander`` holds
out a share of the training *classes* (:func:`identity_split`), trains the GNN on the rest, then on the held-out
classes' level-0 graph fits a monotone map of the link logit ``z = l1 - l0`` to P(same class) -- Platt scaling
``sigmoid(a z + b)`` or temperature scaling ``sigmoid(z / T)`` (scikit-learn's logistic regression) -- and chooses tau
on that calibrated scale by clustering the held-out classes at every candidate (ties: the one nearest 0.5). The map, tau and the F-vs-tau curve go
into the checkpoint (``checkpoint["hilander_calibration"]``, plain floats and lists) and ``cluster`` uses them.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autolabel.errors import CheckpointError, ConfigError, DataError

CKPT_KEY = "hilander_calibration"


class CalibrationWarning(UserWarning):
    """Calibration was skipped or fell back (too few classes to hold out, a link head that does not rank edges)."""


@dataclass
class Calibration:
    """A monotone map from link logits to calibrated P(same class), and the tau chosen on that scale."""

    tau: float
    a: float = 1.0  # calibrated p = sigmoid(a * z + b), z = logit_same - logit_diff
    b: float = 0.0
    method: str = "none"  # platt | temperature | none
    metric: str = "pairwise_f"
    curve: dict[str, float] = field(default_factory=dict)  # "tau" -> metric on the held-out classes
    curves: dict[str, dict[str, float]] = field(default_factory=dict)  # every metric's curve
    n_samples: int = 0  # held-out samples (scored)
    n_classes: int = 0  # held-out classes
    n_distractors: int = 0  # GNN-training samples they were clustered among (not scored)
    held_out_classes: list[int] = field(default_factory=list)
    source: str = ""  # where it was calibrated (for the `cluster` message)

    def prob(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated P(same class) of each edge from its 2-way link logits."""
        z = (logits[:, 1] - logits[:, 0]).float()
        return torch.sigmoid(self.a * z + self.b)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def identity_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """``(fit_index, held_out_index)``: a seeded share of the *classes* (at least 2, leaving at least 2) held out, all
    of their samples with them, so no identity is on both sides. None when ``fraction`` is 0 or there are fewer
    than 4 classes (nothing meaningful to hold out)."""
    y = np.asarray(labels)
    classes = np.unique(y)
    if fraction <= 0 or len(classes) < 4:
        return None
    n_held = int(min(max(2, round(fraction * len(classes))), len(classes) - 2))
    held = np.random.default_rng(seed).choice(classes, n_held, replace=False)
    is_held = np.isin(y, held)
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


@torch.no_grad()
def hierarchy_link_logits(
    model: torch.nn.Module,
    features: np.ndarray,
    labels: np.ndarray,
    k: int,
    levels: int,
    knn_kwargs: dict | None = None,
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Link logits and same-class labels of every edge of the pool's ground-truth level graphs (level 0 and the
    supernode levels above it, as meta-training builds them): the edges decoding meets at every level, including the
    cross-class links between supernodes that a level-0 graph of well-separated classes lacks."""
    import warnings as _w

    from autolabel.hilander.hierarchy import build_training_levels
    from autolabel.hilander.search import KCapWarning

    with _w.catch_warnings():
        _w.simplefilter("ignore", KCapWarning)
        graphs = build_training_levels(features, labels, [k], [levels], knn_kwargs)
    model = model.to(device).eval()
    logits, same = [], []
    for g in graphs:
        out, _ = model(g.to(device))
        logits.append(out.float().cpu())
        same.append(g.edge_label.cpu())
    return torch.cat(logits), torch.cat(same)


def fit_link_map(logits: torch.Tensor, same: torch.Tensor, method: str) -> tuple[float, float]:
    """``(a, b)`` of ``p = sigmoid(a z + b)`` fitted by logistic regression of the edges' same-class labels on their
    link logit ``z`` (temperature: ``b = 0``). Falls back to the identity map (a warning) when the edges hold one
    class only or the fit does not rank same-class edges higher (``a <= 0``)."""
    from sklearn.linear_model import LogisticRegression

    if method == "none":
        return 1.0, 0.0
    z = (logits[:, 1] - logits[:, 0]).double().numpy().reshape(-1, 1)
    y = same.numpy().astype(int)
    if len(np.unique(y)) < 2:
        warnings.warn("calibration: the held-out graph's edges are all same-class or all other-class; link "
                      "probabilities left uncalibrated", CalibrationWarning, stacklevel=2)  # fmt: skip
        return 1.0, 0.0
    lr = LogisticRegression(C=1e4, fit_intercept=method == "platt", max_iter=1000)
    lr.fit(z, y)
    a = float(lr.coef_[0, 0])
    b = float(lr.intercept_[0]) if method == "platt" else 0.0
    if not (a > 0 and math.isfinite(a) and math.isfinite(b)):
        warnings.warn(f"calibration: the link logits do not rank same-class edges higher on the held-out classes "
                      f"(slope {a:.3g}); link probabilities left uncalibrated", CalibrationWarning,
                      stacklevel=2)  # fmt: skip
        return 1.0, 0.0
    return a, b


def adaptive_candidates(prob: np.ndarray, same: np.ndarray) -> set[float]:
    """Taus where the held-out edges actually are: deciles of the same-class and of the other-class edges'
    probabilities, and the upper tail of the other-class ones (the links that wrongly merge clusters), rounded."""
    out: set[float] = set()
    pos, neg = prob[same.astype(bool)], prob[~same.astype(bool)]
    qs = np.linspace(0.05, 0.95, 10)
    if len(pos):
        out |= {float(v) for v in np.quantile(pos, qs)}
    if len(neg):
        out |= {float(v) for v in np.quantile(neg, np.concatenate([qs, [0.98, 0.99, 0.995, 0.999]]))}
    return {round(min(max(t, 0.0), 0.999999), 6) for t in out}


def held_out_pairwise_f(truth: np.ndarray, pred: np.ndarray, held: np.ndarray) -> float:
    """Pairwise F over the pairs with at least one ``held`` sample (the others are distractors of other classes):
    a held-out sample merged into a distractor's cluster is a false positive, distractor pairs are not scored."""

    def pairs(groups: np.ndarray) -> float:  # ordered pairs in the same group with >= 1 held member, no self pairs
        all_ = np.bincount(groups).astype(np.float64)
        rest = np.bincount(groups[~held], minlength=len(all_)).astype(np.float64)
        return float((all_**2 - rest**2).sum() - held.sum())

    t = np.where(held, truth, -1 - np.arange(len(truth)))  # distractors: never the same class as anything
    _, t = np.unique(t, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    _, joint = np.unique(p.astype(np.int64) * (t.max() + 1) + t, return_inverse=True)
    tp, pp, ap = pairs(joint), pairs(p), pairs(t)
    prec, rec = tp / max(pp, 1.0), tp / max(ap, 1.0)
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def calibrate(
    model: torch.nn.Module,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    candidates: list[float],
    metric: str = "pairwise_f",
    method: str = "platt",
    source: str = "",
    adaptive: bool = True,
    distractors: np.ndarray | None = None,
    **cluster_kwargs: Any,
) -> Calibration:
    """Fit the link map on a labeled pool of classes the GNN did not train on, then cluster the pool at every
    candidate tau on the calibrated scale and keep the best by ``metric`` (ties: the middle of the plateau, as
    :func:`~autolabel.hilander.hierarchy.select_tau`). ``cluster_kwargs``: k, levels, early_stop, device, knn_kwargs."""
    from autolabel.hilander.hierarchy import cluster_pool
    from autolabel.metrics.clustering import evaluate_clustering

    x = np.ascontiguousarray(features, dtype=np.float32)
    y = np.asarray(labels)
    if len(x) < 3 or len(np.unique(y)) < 2:
        raise DataError(f"calibration needs a labeled pool with >= 2 classes and >= 3 samples, got N={len(x)}, "
                        f"{len(np.unique(y))} classes: hold out more classes (calibration.fraction)")  # fmt: skip
    if not candidates:
        raise ConfigError("calibration needs candidate taus, e.g. calibration.candidates=[0.1,0.2,...,0.9]")
    k = int(cluster_kwargs.get("k", 10))
    device = str(cluster_kwargs.get("device", "cpu"))
    device = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    from autolabel.hilander.search import knn_search

    levels = int(cluster_kwargs.get("levels", 3))
    logits, same = hierarchy_link_logits(model, x, y, k, levels, cluster_kwargs.get("knn_kwargs"), device)
    a, b = fit_link_map(logits, same, method)
    grid = {round(float(t), 6) for t in candidates}
    if adaptive:
        grid |= adaptive_candidates(torch.sigmoid(a * (logits[:, 1] - logits[:, 0]) + b).numpy(), same.numpy())
    held = np.ones(len(x), dtype=bool)
    if distractors is not None and len(distractors):
        # the held-out classes among the GNN's training samples: a pool of realistic size and density (the best tau
        # grows with the number of look-alike identities around a sample); scored on pairs with a held-out member
        x = np.concatenate([x, np.ascontiguousarray(distractors, dtype=np.float32)])
        held = np.concatenate([held, np.zeros(len(distractors), dtype=bool)])
        y = np.concatenate([y, np.full(len(distractors), -1, dtype=y.dtype)])
    knn = knn_search(x, min(k, len(x) - 1), **dict(cluster_kwargs.get("knn_kwargs") or {}))
    cal = Calibration(tau=0.5, a=a, b=b, method=method if (a, b) != (1.0, 0.0) else "none", metric=metric,
                      n_samples=int(held.sum()), n_classes=int(len(np.unique(y[held]))),
                      n_distractors=int((~held).sum()), source=source)  # fmt: skip
    curves: dict[str, dict[float, float]] = {"pairwise_f": {}, "bcubed_f": {}, "nmi": {}, "n_clusters": {}}
    level0: dict = {}  # the level-0 graph and GNN outputs, the same at every tau
    for tau in sorted(grid, reverse=True):
        res = cluster_pool(model, x, tau=tau, progress=False, link_prob=cal.prob, level0_knn=knn, level0_cache=level0,
                           **cluster_kwargs)  # fmt: skip
        m = evaluate_clustering(y[held], res.labels[held])
        if not held.all():
            m["pairwise_f"] = held_out_pairwise_f(y, res.labels, held)
        for name in curves:
            curves[name][tau] = float(m[name])
    scores = curves[metric]
    top = max(scores.values())
    tied = sorted(t for t, v in scores.items() if v >= top - 1e-12)
    # A plateau of equal scores: on a calibrated scale take the tie closest to P(same) = 0.5 (the Bayes threshold);
    # uncalibrated, the middle of the plateau (as select_tau).
    cal.tau = float(min(tied, key=lambda t: (abs(t - 0.5), -t)) if cal.method != "none" else tied[len(tied) // 2])
    cal.curve = {f"{t:g}": v for t, v in sorted(scores.items())}
    cal.curves = {name: {f"{t:g}": v for t, v in sorted(c.items())} for name, c in curves.items()}
    return cal


def write_calibration(checkpoint: str | os.PathLike, cal: Calibration) -> Path:
    """Store ``cal`` in a Lightning checkpoint (atomically; plain types only, so ``weights_only`` loading reads it)."""
    from autolabel.engine.checkpoint_io import load_checkpoint
    from autolabel.engine.io import atomic_write_bytes

    p = Path(checkpoint)
    ckpt = load_checkpoint(p, "cpu", what="Hi-LANDER checkpoint")
    ckpt[CKPT_KEY] = cal.to_dict()
    import io

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return atomic_write_bytes(p, buf.getvalue())


def read_calibration(ckpt: dict) -> Calibration | None:
    """The calibration stored in a loaded checkpoint dict, or None (checkpoints from before calibration)."""
    d = ckpt.get(CKPT_KEY) if isinstance(ckpt, dict) else None
    if d is None:
        return None
    try:
        return Calibration.from_dict(d)
    except (TypeError, AttributeError) as e:
        raise CheckpointError(
            f"the checkpoint's {CKPT_KEY} entry is damaged ({e}); rerun `autolabel fit hilander`"
        ) from e


# Held-out classes below this are few: tau placed on so few classes is a guess, and `fit` and `cluster` say so.
FEW_HELD_OUT_CLASSES = 10


def few_classes_caution(cal: Calibration | None) -> str | None:
    """One line for a calibration made on fewer than FEW_HELD_OUT_CLASSES held-out classes (0: not recorded, older
    checkpoints), else None. With 2 held out of 5 or 10 seen classes the calibrated tau missed the unseen pool's best
    tau by more than 0.03 pairwise F on 20 of 24 seeds of five real sets (by up to 0.14), where 20 held-out identities
    came within 0.03 on every seed (benchmarks/README.md, "Hi-LANDER right by default")."""
    if cal is None or not 0 < cal.n_classes < FEW_HELD_OUT_CLASSES:
        return None
    return (f"tau was calibrated on only {cal.n_classes} held-out classes: with under {FEW_HELD_OUT_CLASSES} it can "
            "miss a pool's best tau by 0.1 pairwise F; check the clusters, and recalibrate with calibrate=LABELED.npz "
            "(seen classes, the more the better) or set cluster.tau")  # fmt: skip


def resolve_tau(given: float | None, cal: Calibration | None, default: float) -> tuple[float, str]:
    """The tau ``cluster`` uses and a sentence saying where it came from."""
    scale = "calibrated" if cal is not None and cal.method != "none" else "raw"
    if given is not None:
        return float(given), f"cluster.tau given (compared with {scale} link probabilities)"
    if cal is not None:
        where = f" on {cal.source}" if cal.source else ""
        among = f" among {cal.n_distractors} others" if cal.n_distractors else ""
        few = f"; only {cal.n_classes} classes, a rough guess" if few_classes_caution(cal) else ""
        return cal.tau, (f"calibrated by fit{where}: {cal.n_classes} held-out classes, {cal.n_samples} samples{among}, "
                         f"{cal.method} link map, best {cal.metric}{few}")  # fmt: skip
    return default, "default: the checkpoint carries no calibrated tau (retrain with `autolabel fit hilander`)"


def tau_curve_figure(cal: Calibration, path: str | os.PathLike) -> Path | None:
    """F-score (and NMI) vs tau on the held-out classes, the chosen tau marked; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 3.0), dpi=100)
    for name in ("pairwise_f", "bcubed_f", "nmi"):
        c = cal.curves.get(name, {})
        if c:
            ts = sorted(c, key=float)
            ax.plot([float(t) for t in ts], [c[t] for t in ts], marker="o", ms=3, label=name)
    ax.axvline(cal.tau, color="k", ls="--", lw=1, label=f"tau={cal.tau:g}")
    ax.set_xlabel(f"tau ({cal.method} calibrated)" if cal.method != "none" else "tau")
    ax.set_ylabel("score on held-out classes")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
