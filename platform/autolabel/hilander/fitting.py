"""Meta-training Hi-LANDER the way ``autolabel fit hilander`` and the pipelines do it: hold out identities, train the
GNN on the rest, calibrate its links and tau on the held-out identities, store them in the checkpoint, and (with a
validation pool) score the clustering users will get.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from autolabel.config.hilander import (
    DEFAULT_TAU,
    CalibrationConfig,
    HiLanderClusterConfig,
    HiLanderTrainConfig,
    LanderModelConfig,
)
from autolabel.data.pools import FeaturePool
from autolabel.errors import DataError
from autolabel.hilander.calibration import (
    Calibration,
    CalibrationWarning,
    calibrate,
    few_classes_caution,
    identity_split,
    tau_curve_figure,
    write_calibration,
)

CLUSTER_METRICS = ("pairwise_f", "bcubed_f", "nmi", "n_clusters")


def split_identities(pool: FeaturePool, cfg: CalibrationConfig) -> tuple[FeaturePool, FeaturePool | None, dict]:
    """``(gnn_pool, calibration_pool or None, info)``: the classes in ``calibration_pool`` never occur in
    ``gnn_pool`` (:func:`~autolabel.hilander.calibration.identity_split`). ``info`` records the split."""
    if not pool.has_labels:
        raise DataError("Hi-LANDER meta-training needs labels in the training pool (one class id per sample)")
    split = identity_split(pool.labels, cfg.fraction, cfg.seed) if cfg.method != "none" or cfg.fraction > 0 else None
    if split is None:
        return pool, None, {"held_out_classes": [], "gnn_samples": pool.n, "calibration_samples": 0}
    fit_idx, cal_idx = split
    held = sorted(int(c) for c in np.unique(pool.labels[cal_idx]))
    info = {"held_out_classes": held, "gnn_samples": int(len(fit_idx)), "calibration_samples": int(len(cal_idx)),
            "gnn_index": fit_idx, "calibration_index": cal_idx}  # fmt: skip
    return pool.subset(fit_idx), pool.subset(cal_idx), info


def score_pool(model: Any, pool: FeaturePool, cal: Calibration | None, cluster: HiLanderClusterConfig | None) -> dict:
    """Cluster a labeled pool as ``autolabel cluster`` would (the calibrated tau, DEFAULT_TAU without one, replaced
    when it leaves the pool degenerate): pairwise/BCubed F, NMI, #clusters and the tau used."""
    import dataclasses

    from autolabel.hilander.clustering import cluster_usable
    from autolabel.metrics.clustering import evaluate_clustering

    tau = cal.tau if cal is not None else DEFAULT_TAU
    cfg = dataclasses.replace(cluster or HiLanderClusterConfig(), tau=None)
    res, extra = cluster_usable(model, pool.features, tau, cal.prob if cal else None, cfg, progress=False)
    m = evaluate_clustering(pool.labels, res.labels)
    return {name: float(m[name]) for name in CLUSTER_METRICS} | {"tau": float(extra.get("tau", tau))}


class ClusterMetricsCallback(pl.Callback):
    """Every ``every`` epochs (and never on other ranks than 0): calibrate on the held-out identities, cluster the
    validation pool at the calibrated tau and log ``val/pairwise_f``, ``val/bcubed_f``, ``val/nmi``,
    ``val/n_clusters``, ``val/tau`` -- what a sweep should rank by, not the training loss."""

    def __init__(self, val_pool: FeaturePool, cal_pool: FeaturePool | None, cfg: CalibrationConfig,
                 cluster: HiLanderClusterConfig | None, every: int):  # fmt: skip
        self.val_pool, self.cal_pool, self.cfg, self.cluster, self.every = val_pool, cal_pool, cfg, cluster, every
        self.gnn_features = None  # set by meta_train: the distractors calibration clusters the held-out classes among

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every <= 0 or epoch % self.every or not trainer.is_global_zero:
            return
        model = pl_module.model
        was_training = model.training
        cal = None
        if self.cal_pool is not None:
            cal = calibrate(model, self.cal_pool.features, self.cal_pool.labels, candidates=list(self.cfg.candidates),
                            metric=self.cfg.metric, method=self.cfg.method, adaptive=self.cfg.adaptive,
                            distractors=self.gnn_features if self.cfg.distractors else None,
                            **(self.cluster or HiLanderClusterConfig()).pool_kwargs())  # fmt: skip
        scores = score_pool(model, self.val_pool, cal, self.cluster)
        model.train(was_training)
        for name, v in scores.items():
            pl_module.log(f"val/{name}", float(v), rank_zero_only=True, on_epoch=True)


def meta_train(
    train_pool: FeaturePool,
    val_pool: FeaturePool | None,
    model_cfg: LanderModelConfig,
    train_cfg: HiLanderTrainConfig,
    trainer_cfg: Any,
    stage_dir: str | Path,
    calibration: CalibrationConfig | None = None,
    cluster: HiLanderClusterConfig | None = None,
    val_cluster_every: int = 0,
) -> dict[str, Any]:
    """Hold out identities, train LANDER on the rest, calibrate links + tau on the held-out ones, write them into the
    checkpoint; returns the stage manifest (checkpoint, calibration.json, the F-vs-tau figure, metrics)."""
    from autolabel.engine import fit
    from autolabel.engine.io import write_json
    from autolabel.hilander.lander_module import LanderModule, LevelGraphDataModule

    stage_dir = Path(stage_dir)
    cal_cfg = calibration or CalibrationConfig()
    if val_pool is not None and not val_pool.has_labels:
        raise DataError("the validation pool has no 'labels' array: validation needs labels (or leave it unset)")
    gnn_pool, cal_pool, split = split_identities(train_pool, cal_cfg)
    dm = LevelGraphDataModule(gnn_pool, train_cfg, val_pool=val_pool, num_conv=model_cfg.num_conv)
    module = LanderModule(model_cfg, train_cfg, feature_dim=gnn_pool.dim)
    callbacks = []
    if val_pool is not None and val_cluster_every > 0:
        callbacks.append(ClusterMetricsCallback(val_pool, cal_pool, cal_cfg, cluster, val_cluster_every))
        callbacks[-1].gnn_features = gnn_pool.features
    trainer = fit(module, dm, trainer_cfg, stage_dir, monitor="val/loss" if val_pool is not None else None,
                  callbacks=callbacks)  # fmt: skip
    ckpt = stage_dir / "checkpoints" / "last.ckpt"
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    out: dict[str, Any] = {"outputs": {"checkpoint": ckpt}, "metrics": metrics, "figures": [], "captions": {}}
    if not trainer.is_global_zero:
        return out
    model = module.model.cpu().eval()
    cal = None
    if cal_pool is not None:
        cal = calibrate(model, cal_pool.features, cal_pool.labels, candidates=list(cal_cfg.candidates),
                        metric=cal_cfg.metric, method=cal_cfg.method, adaptive=cal_cfg.adaptive,
                        source="held-out training classes", distractors=gnn_pool.features if cal_cfg.distractors else None,
                        **(cluster or HiLanderClusterConfig()).pool_kwargs())  # fmt: skip
        cal.held_out_classes = split["held_out_classes"]
        write_calibration(ckpt, cal)
        metrics["tau"] = cal.tau
        metrics["calibration/" + cal_cfg.metric] = cal.curve[f"{cal.tau:g}"]
        payload = {**cal.to_dict(), "gnn_samples": split["gnn_samples"]}
        caution = few_classes_caution(cal)
        if caution:
            warnings.warn(caution, CalibrationWarning, stacklevel=2)
            payload["caution"] = caution
        out["outputs"]["calibration"] = write_json(stage_dir / "calibration.json", payload)
        fig = tau_curve_figure(cal, stage_dir / "tau_curve.png")
        if fig is not None:
            out["figures"].append(str(fig))
            out["captions"][str(fig)] = (f"score vs tau on {cal.n_classes} held-out classes ({cal.method} calibrated "
                                         f"links); tau={cal.tau:g} chosen by {cal.metric}")  # fmt: skip
    else:
        metrics["tau"] = DEFAULT_TAU
    if val_pool is not None:
        for name, v in score_pool(model, val_pool, cal, cluster).items():
            metrics[f"val/{name}"] = v
    return out
