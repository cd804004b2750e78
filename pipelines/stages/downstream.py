"""The downstream check of label quality: a small UNet trained on labels -- synthetic, or the few real ones -- and
scored on a real labeled test folder (segmentation: mIoU + pixel accuracy; depth: RMSE, abs-rel...; keypoints:
PCK@t and NME).

The pipeline stage (:func:`stage_downstream`) compares synthetic, real_few, mixed and finetuned sets at EQUAL OPTIMIZER
STEPS beside a constant baseline (:mod:`autolabel.tasks.compare`, configured by
:class:`autolabel.config.downstream.DownstreamConfig`); the ``fit segmentation`` / ``fit keypoints`` commands train
one set for ``max_epochs`` (:class:`DenseFitConfig` below).

Checkpoint selection (DESIGN 3.6): a fixed ``val_fraction`` slice of the test folder (seed 0, the same for every run
on that folder) validates every epoch; the epoch with the best validation score (mIoU / RMSE / NME) is kept as
``checkpoints/best.ckpt`` and scored on the REST of the test folder. ``val_fraction=0`` scores the final weights on
the whole test folder (no selection).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from autolabel.config import TrainerConfig
from autolabel.config.downstream import KeypointNetConfig, SegmentationNetConfig
from autolabel.errors import ConfigError, DataError
from pipelines.runner import Stage, StageContext


@dataclass
class DenseFitConfig:
    """How ``autolabel fit segmentation`` / ``fit keypoints`` build and train one downstream net (their commands add
    the folders). The pipeline's ``downstream`` section, which compares training sets at equal steps, is
    :class:`autolabel.config.downstream.DownstreamConfig`."""

    base: int = 16  # UNet width of the first stage; stages double it
    depth: int = 3  # UNet down/up stages
    lr: float = 1e-3
    batch_size: int = 8
    max_epochs: int = 20
    # a fixed share of the real test folder picks each net's best epoch; metrics are reported on the rest (0: last
    # epoch, scored on the whole test folder)
    val_fraction: float = 0.2
    # training augmentation, as in the pipeline's downstream check: flips (segmentation, depth) or a random affine
    # warp (keypoints), then random saturation/contrast/brightness/blur of the image (false: the geometric step only)
    photometric: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(
                f"val_fraction={self.val_fraction} must be in [0, 1): the share of the test folder used to pick the "
                "checkpoint (0.2 by default, 0 = score the final weights)"
            )
        if self.base < 1 or self.depth < 1:
            raise ConfigError(f"base={self.base}, depth={self.depth}: need base, depth >= 1")
        if self.batch_size < 1 or self.lr <= 0 or self.max_epochs < 1:
            raise ConfigError(
                f"batch_size={self.batch_size}, lr={self.lr}, max_epochs={self.max_epochs}: "
                "need batch_size >= 1, lr > 0 and max_epochs >= 1"
            )


def check_size(size: int, depth: int) -> None:
    if size < 2**depth:
        raise ConfigError(f"size={size}, depth={depth}: need size >= 2**depth")


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """Counts stay ints, scores become plain floats (JSON-friendly)."""
    return {k: v if isinstance(v, int) and not isinstance(v, bool) else float(v) for k, v in metrics.items()}


def _seed(trainer: TrainerConfig) -> None:
    import pytorch_lightning as pl

    pl.seed_everything(trainer.seed, workers=True, verbose=False)  # the model's initial weights follow trainer.seed


def split_test(test: Any, val_fraction: float) -> tuple[Any, Any]:
    """``(val, scored)``: the fixed ``val_fraction`` slice of ``test`` that picks the checkpoint and the rest, which
    is scored (``(None, test)`` for ``val_fraction=0``)."""
    from autolabel.data.labeled import FolderSubset, holdout_split

    val_idx, rest_idx = holdout_split(len(test), val_fraction, seed=0)
    if not val_idx:
        return None, test
    return FolderSubset(test, val_idx), FolderSubset(test, rest_idx)


def _fit_selected(
    module: Any, dm: Any, d: DenseFitConfig, trainer_cfg: TrainerConfig, stage_dir: Path, monitor: str, mode: str
) -> tuple[Path, dict[str, Any]]:
    """Train; with a validation slice keep the best epoch by ``monitor`` and load its weights into ``module``.
    Returns the scored checkpoint and selection metrics (``val_images``, ``best_epoch``, ``val_score``)."""
    from autolabel.engine import fit
    from autolabel.engine.checkpoint_io import load_checkpoint

    tc = dataclasses.replace(trainer_cfg, max_epochs=d.max_epochs, max_steps=-1)
    ckpts = stage_dir / "checkpoints"
    if dm.val_set is None:
        fit(module, dm, tc, stage_dir)
        return ckpts / "last.ckpt", {"val_images": 0}
    trainer = fit(module, dm, tc, stage_dir, monitor=monitor, monitor_mode=mode)
    best = ckpts / "best.ckpt"
    if not best.is_file():
        raise DataError(f"no {best} after training: the validation slice logged no {monitor} -- check val_fraction")
    state = load_checkpoint(best, what="best checkpoint")
    module.load_state_dict(state["state_dict"])
    score = next((cb.best_model_score for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
    info = {"val_images": len(dm.val_set), "best_epoch": int(state["epoch"])}
    if score is not None:
        info["val_score"] = float(score)
    return best, info


def open_dense_folders(train: str, test: str, task: str, size: int, limit: int = -1) -> tuple[Any, Any]:
    """Load ``train`` and ``test`` for a segmentation or depth check."""
    from autolabel.data.layout import open_labeled

    n = limit if limit > 0 else None
    return open_labeled(train, task, size, limit=n, role="train"), open_labeled(test, task, size, role="test")


def train_segmentation(
    d: DenseFitConfig,
    train: str,
    test: str,
    task: str,
    size: int,
    trainer_cfg: TrainerConfig,
    stage_dir: Path,
    limit: int = -1,
    folders: tuple | None = None,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Train a UNet on ``train`` (masks, or depth with ``task=depth``) and score it on the real folder ``test``;
    mask pixels equal to ``ignore_index`` count neither in the loss nor in the metrics."""
    from autolabel.tasks.compare import augment
    from autolabel.tasks.segmentation import DenseDataModule, evaluate_depth, evaluate_segmentation
    from autolabel.tasks.segmentation_module import SegmentationModule

    train_set, test_set = folders or open_dense_folders(train, test, task, size, limit)
    val, scored = split_test(test_set, d.val_fraction)
    n_classes = max(train_set.n_classes, test_set.n_classes) if task == "segmentation" else None
    dm = DenseDataModule(train, test, task, size, d.batch_size)
    dm.train_set = augment(train_set, task, trainer_cfg.seed, photometric=d.photometric)  # folders opened above
    dm.val_set, dm.n_classes = val, n_classes
    channels = int(train_set[0]["image"].shape[0])
    _seed(trainer_cfg)
    net = SegmentationNetConfig(task, d.base, d.depth, d.lr, ignore_index)
    module = SegmentationModule(net, n_classes=n_classes or 1, in_channels=channels)
    monitor, mode = ("val/miou", "max") if task == "segmentation" else ("val/rmse", "min")
    ckpt, selection = _fit_selected(module, dm, d, trainer_cfg, stage_dir, monitor, mode)
    if task == "segmentation":
        scores = evaluate_segmentation(module, scored, n_classes=n_classes, ignore_index=ignore_index)
        per_class = {f"iou_class{i}": v for i, v in enumerate(scores["per_class_iou"])}
        metrics = {"miou": scores["miou"], "pixel_acc": scores["pixel_acc"], **per_class}
    else:
        metrics = evaluate_depth(module, scored)
    metrics.update(train_images=len(train_set), test_images=len(scored), **selection)
    return {"outputs": {"checkpoint": ckpt}, "metrics": _scalars(metrics)}


def open_keypoint_folders(
    train: str,
    test: str,
    size: int,
    limit: int = -1,
    min_confidence: float = 0.0,
    flip_pairs: Optional[list[Any]] = None,
) -> tuple[Any, Any, list[tuple[int, int]] | None]:
    """Load ``train`` and ``test`` and check they label the same keypoints; returns (train, test, flip pairs)."""
    from autolabel.data.layout import open_labeled

    n = limit if limit > 0 else None
    train_set = open_labeled(train, "keypoints", size, limit=n, role="train", min_confidence=min_confidence)
    test_set = open_labeled(test, "keypoints", size, role="test")
    if train_set.n_keypoints != test_set.n_keypoints:
        raise DataError(
            f"train has {train_set.n_keypoints} keypoints per image but test has {test_set.n_keypoints}: both "
            "folders must label the same keypoints in the same order"
        )
    pairs = None if flip_pairs is None else [(int(a), int(b)) for a, b in flip_pairs]
    bad = [p for p in pairs or [] if max(p) >= train_set.n_keypoints]
    if bad:
        raise ConfigError(
            f"flip_pairs={flip_pairs}: index {max(bad[0])} out of range for {train_set.n_keypoints} "
            f"keypoints -- use indices 0..{train_set.n_keypoints - 1}"
        )
    return train_set, test_set, pairs


def train_keypoints(
    d: DenseFitConfig,
    train: str,
    test: str,
    size: int,
    trainer_cfg: TrainerConfig,
    stage_dir: Path,
    *,
    limit: int = -1,
    sigma: float = 1.5,
    pck_threshold: float = 0.1,
    min_confidence: float = 0.0,
    flip_pairs: Optional[list[Any]] = None,
    folders: tuple | None = None,
) -> dict[str, Any]:
    """Train a UNet heatmap regressor on ``train`` and score PCK / NME on the real folder ``test``."""
    from autolabel.tasks.compare import augment, relative_mean_shape
    from autolabel.tasks.keypoints import evaluate_keypoints
    from autolabel.tasks.keypoints_module import KeypointModule
    from autolabel.tasks.segmentation import DenseDataModule

    train_set, test_set, pairs = folders or open_keypoint_folders(train, test, size, limit, min_confidence, flip_pairs)
    val, scored = split_test(test_set, d.val_fraction)
    dm = DenseDataModule(train, test, "keypoints", size, d.batch_size)
    dm.train_set = augment(train_set, "keypoints", trainer_cfg.seed, pairs, d.photometric)  # affine (+ flips), colour
    dm.val_set = val
    _seed(trainer_cfg)
    channels = int(train_set[0]["image"].shape[0])
    net = KeypointNetConfig(d.base, d.depth, d.lr, sigma, pck_threshold)
    module = KeypointModule(net, n_keypoints=train_set.n_keypoints, in_channels=channels,
                            mean_shape=relative_mean_shape(train_set))  # fmt: skip
    ckpt, selection = _fit_selected(module, dm, d, trainer_cfg, stage_dir, "val/nme", "min")
    scores = evaluate_keypoints(module.model, scored, threshold=pck_threshold, per_keypoint=True)
    per = scores.pop("per_keypoint_pck")
    metrics = {
        **scores,
        **{f"pck_kp{i}": v for i, v in enumerate(per)},
        "n_keypoints": train_set.n_keypoints,
        "train_images": len(train_set),
        "test_images": len(scored),
        **selection,
    }
    return {"outputs": {"checkpoint": ckpt}, "metrics": _scalars(metrics)}


def _synthetic_size(dataset: Path) -> int:
    from PIL import Image

    first = next(iter(sorted((dataset / "images").glob("*"))), None)
    if first is None:
        raise DataError(f"the synthetic dataset {dataset} holds no images: rerun with from_stage=synthesis")
    with Image.open(first) as im:
        return int(im.height)


def stage_downstream(ctx: StageContext) -> dict[str, Any]:
    """Synthetic vs few real vs mixed vs finetuned labels at equal optimizer steps, beside the constant baseline
    (:mod:`autolabel.tasks.compare`)."""
    from autolabel.data.layout import open_labeled
    from autolabel.tasks.compare import compare_training_sets

    d = ctx.cfg.downstream  # autolabel.config.downstream.DownstreamConfig
    test = ctx.inputs["data"].get("outputs", {}).get("test")
    if not test:
        return {"metrics": {"skipped": "no real labeled test folder (data.test): nothing to score the labels on"}}
    task = ctx.cfg.labels.model.task
    synthetic = ctx.input_path("synthesis", "dataset")
    procedural = ctx.cfg.data.source_for(handsoff=True) == "procedural"
    size = ctx.cfg.shapes.size if procedural else _synthetic_size(synthetic)
    check_size(size, d.depth)
    real = open_labeled(ctx.input_path("data", "labeled"), task, size, role="data.labeled")
    synth = open_labeled(synthetic, task, size, role="synthesis", min_confidence=d.min_confidence)
    unlabeled = None
    if d.adapt_bn:  # AdaBN on the unlabeled real images the GAN trained on
        from autolabel.data.images import ImageFolderDataset, sample_images

        channels = int(real[0]["image"].shape[0])
        pool = ImageFolderDataset(ctx.input_path("data", "images"), size=size, channels=channels, with_labels=False)
        unlabeled = sample_images(pool, d.adapt_bn_images, seed=ctx.cfg.trainer.seed)
    test_set = open_labeled(test, task, size, role="data.test")
    out = compare_training_sets(task, real, synth, test_set, d, ctx.cfg.trainer, ctx.dir, unlabeled=unlabeled)
    metrics = {"downstream": out["metrics"], **out["headline"]}  # headline: <metric>_<set>, e.g. miou_mixed
    return {"outputs": {"synthetic_model": out["checkpoints"].get("synthetic")}, "metrics": metrics}


STAGE = Stage(
    "downstream",
    stage_downstream,
    needs=["data", "synthesis"],
    config_keys=["downstream"],
    description="train a downstream net on synthetic vs few real labels, score on real test images",
    distributed=True,
)
