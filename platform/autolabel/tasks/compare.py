"""The downstream comparison of training sets, on equal terms (DESIGN section 7).

Four training sets are compared by the same downstream net on the same real test images:

- ``synthetic``: the synthetic labeled images only;
- ``real_few``: the few real labeled images only;
- ``mixed``: both, the real images repeated so that they make about ``real_share`` of the draws (otherwise a few
  dozen real images vanish among thousands of synthetic ones);
- ``finetuned``: both, one after the other -- the first ``pretrain_share`` of the steps on the synthetic images, then
  the rest on the real ones, starting from the pretraining's best checkpoint (the usual way to use a large, imperfect
  labeled set with a small, exact one);

plus ``constant``: one answer for every test image, computed from the real labeled images only -- the per-pixel
majority class (segmentation; for binary masks, the mean mask thresholded at 0.5), the mean labeled shape (keypoints),
the mean depth map (depth). A net that does not beat it has learned nothing.

Equal budgets: every training set gets the SAME NUMBER OF OPTIMIZER STEPS (``steps``, whatever its size; never the
same number of epochs, which hands the larger set many more steps), is validated every ``val_every`` steps on the
same fixed validation slice of the test folder, and the best validation step's checkpoint is scored on the rest.
Seeds: with ``repeats`` > 1 every set is trained on that many seeds and reported as mean and spread (DESIGN section 7).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from autolabel.config.downstream import HEADLINE_METRICS, TRAINING_SETS, DownstreamConfig
from autolabel.errors import ConfigError, DataError

__all__ = ["TRAINING_SETS", "DownstreamConfig", "MixedDataset", "compare_training_sets", "constant_prediction"]

TASKS = ("segmentation", "keypoints", "depth")
# what picks the checkpoint on the validation slice
MONITOR = {"segmentation": ("val/miou", "max"), "keypoints": ("val/nme", "min"), "depth": ("val/rmse", "min")}


# ---------------------------------------------------------------------------------------------------- datasets
class MixedDataset(Dataset):
    """Real + synthetic items, the real ones repeated ``repeats`` times so that they make about ``real_share`` of an
    epoch's draws (never fewer than one copy of each). Items keep the real folder's ``task`` and label counts."""

    def __init__(self, real: Dataset, synthetic: Dataset, real_share: float = 0.5):
        if not 0.0 < real_share < 1.0:
            raise ConfigError(f"real_share={real_share} must be in (0, 1)")
        n_real, n_syn = len(real), len(synthetic)  # type: ignore[arg-type]
        if n_real == 0 or n_syn == 0:
            raise DataError(f"mixed set needs real ({n_real}) and synthetic ({n_syn}) images: both must be non-empty")
        self.real, self.synthetic = real, synthetic
        self.repeats = max(1, round(real_share / (1.0 - real_share) * n_syn / n_real))
        self.n_real_draws = self.repeats * n_real
        for attr in ("task", "n_classes"):
            setattr(self, attr, getattr(real, attr, None))

    @property
    def n_keypoints(self) -> int:
        return int(getattr(self.real, "n_keypoints", 0))

    @property
    def real_fraction(self) -> float:
        return self.n_real_draws / len(self)

    def __len__(self) -> int:
        return self.n_real_draws + len(self.synthetic)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict:
        if i < self.n_real_draws:
            return self.real[i % len(self.real)]  # type: ignore[arg-type]
        return self.synthetic[i - self.n_real_draws]


def _stack(dataset: Dataset, key: str) -> torch.Tensor:
    return torch.stack([dataset[i][key] for i in range(len(dataset))])  # type: ignore[arg-type]


def constant_prediction(labeled: Dataset, task: str, n_classes: int | None = None, ignore_index: int = 255):
    """The constant answer computed from the labeled images only: the per-pixel majority class ``[H, W]``
    (segmentation), the mean shape ``[K, 2]`` over the visible keypoints (keypoints), the mean depth map ``[1, H, W]``
    (depth). All labeled images must share one size (datasets opened with ``size``)."""
    if len(labeled) == 0:  # type: ignore[arg-type]
        raise DataError("no labeled images to compute the constant baseline from")
    if task == "segmentation":
        masks = _stack(labeled, "mask").long()
        k = int(n_classes or getattr(labeled, "n_classes", None) or int(masks[masks != ignore_index].max()) + 1)
        counts = torch.zeros(k, *masks.shape[1:], dtype=torch.long)
        for c in range(k):
            counts[c] = (masks == c).sum(0)
        return counts.argmax(0)  # ties -> the lower class index (background first)
    if task == "keypoints":
        kp, vis = _stack(labeled, "keypoints").double(), _stack(labeled, "visible").bool()
        n = vis.sum(0)
        if bool((n == 0).any()):
            missing = [int(i) for i in torch.nonzero(n == 0).flatten()]
            raise DataError(f"keypoint(s) {missing} are invisible in every labeled image: no mean shape for them")
        return ((kp * vis[..., None]).sum(0) / n[:, None]).float()
    if task == "depth":
        return _stack(labeled, "depth").double().mean(0).float()
    raise ConfigError(f"task={task!r}: use one of {', '.join(TASKS)}")


class ConstantModel(nn.Module):
    """Answers ``constant`` for every image: one-hot logits (a class map), a depth map, or keypoints via ``predict``."""

    def __init__(self, constant: torch.Tensor, task: str, n_classes: int | None = None):
        super().__init__()
        self.task, self.n_classes = task, n_classes
        self.register_buffer("constant", constant.clone())
        self._device_anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # evaluate_* read its device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.task == "segmentation":
            k = self.n_classes or int(self.constant.max()) + 1
            return nn.functional.one_hot(self.constant.long(), k).permute(2, 0, 1)[None].float().expand(b, -1, -1, -1)
        if self.task == "depth":
            return self.constant[None].expand(b, *self.constant.shape)
        return self.constant[None].expand(b, *self.constant.shape)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


# ---------------------------------------------------------------------------------------------------- scoring
def score(model: nn.Module, data: Dataset, task: str, cfg: DownstreamConfig, n_classes: int | None = None) -> dict:
    """The task's metrics of ``model`` on ``data`` (segmentation: mIoU, pixel accuracy, per-class IoU; keypoints:
    PCK/NME under every normalizer; depth: RMSE, RMSE-log, AbsRel, SqRel)."""
    from autolabel.tasks.keypoints import evaluate_keypoints
    from autolabel.tasks.segmentation import evaluate_depth, evaluate_segmentation

    if task == "segmentation":
        s = evaluate_segmentation(model, data, n_classes=n_classes, ignore_index=cfg.ignore_index)  # type: ignore
        return {"miou": s["miou"], "pixel_acc": s["pixel_acc"],
                **{f"iou_class{i}": v for i, v in enumerate(s["per_class_iou"])}}  # fmt: skip
    if task == "depth":
        return evaluate_depth(model, data)  # type: ignore[arg-type]
    return evaluate_keypoints(model, data, thresholds=cfg.pck_thresholds, eye_keypoints=cfg.eye_keypoints)


def split_test(test: Dataset, val_fraction: float) -> tuple[Dataset | None, Dataset]:
    """``(val, scored)``: the fixed ``val_fraction`` slice of ``test`` that picks checkpoints (seed 0: the same for
    every training set and every run on that folder) and the rest, which is scored (``(None, test)`` for 0)."""
    from autolabel.data.labeled import FolderSubset, holdout_split

    val_idx, rest_idx = holdout_split(len(test), val_fraction, seed=0)  # type: ignore[arg-type]
    if not val_idx:
        return None, test
    return FolderSubset(test, val_idx), FolderSubset(test, rest_idx)


# ---------------------------------------------------------------------------------------------------- training
def augment(train: Dataset, task: str, seed: int = 0, flip_pairs: Sequence | None = None,
            photometric: bool = True) -> Dataset:  # fmt: skip
    """The training-time augmentation of the downstream nets: horizontal flips (segmentation, depth); keypoints: a
    random affine warp (shift, scale, rotation), plus flips when ``flip_pairs`` says which keypoints swap; then, with
    ``photometric``, random saturation / contrast / brightness / blur of the image."""
    from autolabel.tasks.augment import PhotometricDataset, RandomAffineDataset
    from autolabel.tasks.segmentation import FlipDataset

    if task != "keypoints":
        train = FlipDataset(train, seed=seed)
    else:
        if flip_pairs is not None:
            train = FlipDataset(train, flip_pairs=[(int(a), int(b)) for a, b in flip_pairs], seed=seed)
        train = RandomAffineDataset(train, seed=seed)
    return PhotometricDataset(train, seed=seed + 11) if photometric else train


def relative_mean_shape(labeled: Dataset) -> torch.Tensor:
    """The mean labeled shape ``[K, 2]`` in units of the image size (x / W, y / H): the keypoint net's prior."""
    h, w = labeled[0]["image"].shape[-2:]
    return constant_prediction(labeled, "keypoints") / torch.tensor([w, h], dtype=torch.float32)


def build_module(task: str, cfg: DownstreamConfig, channels: int, n_classes: int | None, n_keypoints: int,
                 mean_shape: torch.Tensor | None = None):  # fmt: skip
    """The downstream LightningModule for ``task`` (keypoints: with the mean-shape prior when given, in units of
    the image size)."""
    from autolabel.tasks.keypoints_module import KeypointModule
    from autolabel.tasks.segmentation_module import SegmentationModule

    if task == "keypoints":
        return KeypointModule(cfg.keypoint_net(), n_keypoints=n_keypoints, in_channels=channels, mean_shape=mean_shape)
    return SegmentationModule(cfg.segmentation_net(task), n_classes=n_classes or 1, in_channels=channels)


def train_for_steps(module, train: Dataset, val: Dataset | None, task: str, cfg: DownstreamConfig, trainer_cfg,
                    stage_dir: str | os.PathLike, callbacks: Sequence = ()) -> dict[str, Any]:  # fmt: skip
    """Train ``module`` for exactly ``cfg.steps`` optimizer steps (validating every ``cfg.val_every`` on ``val``);
    load the best validation checkpoint's weights (the final ones without ``val``). Returns ``checkpoint``,
    ``steps`` (``trainer.global_step``), ``best_step``, ``val_score``, ``val_images``, ``seconds``. ``callbacks``:
    extra Lightning callbacks (e.g. :class:`~autolabel.tasks.adabn.AdaptBatchNorm`)."""
    from autolabel.engine import fit
    from autolabel.engine.checkpoint_io import load_checkpoint
    from autolabel.tasks.segmentation import DenseDataModule

    t0 = time.perf_counter()
    stage_dir = Path(stage_dir)
    dm = DenseDataModule(stage_dir, None, task, None, cfg.batch_size, seed=trainer_cfg.seed)
    dm.train_set, dm.val_set = train, val
    tc = dataclasses.replace(trainer_cfg, max_steps=cfg.steps, max_epochs=None)
    ckpts = stage_dir / "checkpoints"
    if val is None:
        trainer = fit(
            module, dm, tc, stage_dir, limit_val_batches=0, check_val_every_n_epoch=None, callbacks=list(callbacks)
        )
        trainer.save_checkpoint(ckpts / "last.ckpt", weights_only=False)
        return {"checkpoint": ckpts / "last.ckpt", "steps": int(trainer.global_step), "val_images": 0,
                "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    monitor, mode = MONITOR[task]
    trainer = fit(module, dm, tc, stage_dir, monitor=monitor, monitor_mode=mode,
                  val_check_interval=min(cfg.val_every, cfg.steps), check_val_every_n_epoch=None,
                  num_sanity_val_steps=0, callbacks=list(callbacks))  # fmt: skip
    # the final step (training may stop between two validations)
    trainer.save_checkpoint(ckpts / "last.ckpt", weights_only=False)
    best = ckpts / "best.ckpt"
    if not best.is_file():
        raise DataError(f"no {best} after training: the validation slice logged no {monitor} -- check val_fraction")
    state = load_checkpoint(best, what="best checkpoint")
    module.load_state_dict(state["state_dict"])
    info: dict[str, Any] = {"checkpoint": best, "steps": int(trainer.global_step), "val_images": len(val),
                            "best_step": int(state["global_step"])}  # type: ignore[arg-type]  # fmt: skip
    score_ = next((cb.best_model_score for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
    if score_ is not None:
        info["val_score"] = float(score_)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return info


def _sizes(datasets: Mapping[str, Dataset], task: str) -> tuple[int, int | None, int]:
    items = {k: d[0] for k, d in datasets.items()}
    shapes = {k: tuple(v["image"].shape) for k, v in items.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"training and test images differ in shape {shapes}: open every folder with the same size")
    channels = int(next(iter(shapes.values()))[0])
    n_classes = None
    if task == "segmentation":
        n_classes = max(int(getattr(d, "n_classes", 0) or 0) for d in datasets.values()) or None
    n_kp = {k: int(getattr(d, "n_keypoints", 0)) for k, d in datasets.items()} if task == "keypoints" else {}
    if task == "keypoints" and len(set(n_kp.values())) != 1:
        raise DataError(f"keypoint counts differ between folders {n_kp}: label the same keypoints in the same order")
    return channels, n_classes, (next(iter(n_kp.values())) if n_kp else 0)


def compare_training_sets(task: str, real_few: Dataset, synthetic: Dataset | None, test: Dataset, cfg: DownstreamConfig,
                          trainer_cfg, out_dir: str | os.PathLike, extra_sets: Mapping[str, Dataset] | None = None,
                          unlabeled: torch.Tensor | None = None) -> dict[str, Any]:  # fmt: skip
    """Train one downstream net per training set in ``cfg.sets`` (``synthetic``, ``real_few``, ``mixed``) plus any
    ``extra_sets`` (e.g. ``{"real_many": ...}``), each for ``cfg.steps`` optimizer steps, each picking its checkpoint
    on the same validation slice of ``test``, and score them and the ``constant`` baseline on the rest.

    Returns ``{"metrics": {name: {...}}, "checkpoints": {name: path}, "headline": {f"{metric}_{name}": value}}``;
    each set's metrics include ``train_images``, ``steps`` (== ``cfg.steps``), ``best_step``, ``seconds`` and
    ``best_at_end`` (its best validation was the last one: it may be undertrained, and a note says so).
    The synthetic-only net is also scored on ``real_few`` (``<metric>_on_labeled``; in the headline
    ``<metric>_synthetic_on_labeled``): those images taught the label generator, so the number flatters the net, but
    it is the one score of the synthetic data that needs no test images, and across GANs it ranks them as the test
    images do (benchmarks/README.md, "Which GAN"). With ``cfg.repeats`` > 1 every set is trained once per seed
    ``trainer_cfg.seed``, +1, ...: its scores are the means, ``<headline metric>_sd`` the spreads, ``per_seed`` each
    seed's headline metrics and ``best_step`` (then not given once for the set), and its checkpoint is the first
    seed's. Sub-runs go to ``out_dir/<name>/`` (later seeds:
    ``out_dir/<name>_seed<S>/``; resumed from their ``last.ckpt`` when present). With ``cfg.adapt_bn``, every
    net's BatchNorm statistics are re-estimated on ``unlabeled`` (real images ``[N, C, H, W]``, no labels) before each
    validation and the final score (:mod:`autolabel.tasks.adabn`).
    """
    import pytorch_lightning as pl

    from autolabel.engine.dist import global_rank
    from autolabel.tasks.adabn import AdaptBatchNorm

    if task not in TASKS:
        raise ConfigError(f"downstream task={task!r}: use one of {', '.join(TASKS)}")
    if cfg.adapt_bn and unlabeled is None:
        raise ConfigError("downstream.adapt_bn=true needs unlabeled real images to adapt to (compare_training_sets("
                          "unlabeled=...)); or set downstream.adapt_bn=false")  # fmt: skip
    callbacks = [AdaptBatchNorm(unlabeled)] if cfg.adapt_bn and unlabeled is not None else []
    sets: dict[str, Dataset] = {}
    for name in cfg.sets:
        if name == "real_few":
            sets[name] = real_few
        elif synthetic is None:
            continue
        elif name in ("synthetic", "finetuned"):  # finetuned: the synthetic set first, then real_few
            sets[name] = synthetic
        else:
            sets[name] = MixedDataset(real_few, synthetic, cfg.real_share)
    sets.update(extra_sets or {})
    channels, n_classes, n_kp = _sizes({**sets, "real_few": real_few, "test": test}, task)
    val, scored = split_test(test, cfg.val_fraction)
    constant = constant_prediction(real_few, task, n_classes, cfg.ignore_index)
    results: dict[str, dict[str, Any]] = {}
    checkpoints: dict[str, Path] = {}
    seeds = [trainer_cfg.seed + r for r in range(cfg.repeats)]

    def train_set(name: str, train: Dataset, tc, sub: Path) -> dict[str, Any]:
        """Train and score one net on one training set with the seed ``tc.seed`` (initial weights, augmentation
        draws and batch order all follow it); returns its metrics and ``checkpoint``."""
        sub.mkdir(parents=True, exist_ok=True)
        pl.seed_everything(tc.seed, workers=True, verbose=False)  # the same initial weights for every set
        # keypoints: the prior is the mean shape of the set's own training labels (synthetic-only uses no real label)
        mean_shape = _own_mean_shape(train, real_few) if task == "keypoints" else None
        module = build_module(task, cfg, channels, n_classes, n_kp, mean_shape)

        def augmented(ds: Dataset) -> Dataset:
            return augment(ds, task, tc.seed, cfg.flip_pairs, cfg.photometric) if cfg.augment else ds

        extra: dict[str, Any] = {}
        if global_rank() == 0:  # which net the progress below belongs to
            what = (
                f"{len(train)} synthetic then {len(real_few)} real images"
                if name == "finetuned"
                else f"{len(train)} images"
            )
            seed = f", seed {tc.seed}" if len(seeds) > 1 else ""
            print(f"  training set {name}: {what}, {cfg.steps} steps{seed}", flush=True)
        if name == "finetuned":
            info = _pretrain_then_finetune(module, augmented(train), augmented(real_few), val, task, cfg, tc, sub,
                                           callbacks)  # fmt: skip
            extra = {"train_images": len(train) + len(real_few)}
        else:
            info = train_for_steps(module, augmented(train), val, task, cfg, tc, sub, callbacks)
        if callbacks:
            extra["adapt_bn_images"] = len(unlabeled)  # type: ignore[arg-type]
        net = module.model if task == "keypoints" else module
        metrics = score(net, scored, task, cfg, n_classes)
        if name == "synthetic":  # the same net on the few labeled images: a score that needs no test images
            own = score(net, real_few, task, cfg, n_classes)
            extra.update({f"{m}_on_labeled": own[m] for m in HEADLINE_METRICS[task] if m in own})
        if isinstance(train, MixedDataset):
            extra["real_fraction"] = round(train.real_fraction, 4)
        if "best_step" in info:  # the best validation was the last one: this net may still be improving
            extra["best_at_end"] = info["best_step"] + cfg.val_every > info["steps"]
            if extra["best_at_end"] and global_rank() == 0:
                print(f"  note: {name} scored best at its last validation (step {info['best_step']} of "
                      f"{info['steps']}); it may still be improving: raise downstream.steps", flush=True)  # fmt: skip
        return {**metrics, "train_images": len(train), "test_images": len(scored), **info, **extra}

    for name, train in sets.items():
        runs = []
        for seed in seeds:  # the first seed's sub-run keeps the plain name (and is the set's checkpoint)
            sub = Path(out_dir) / (name if seed == seeds[0] else f"{name}_seed{seed}")
            runs.append(train_set(name, train, dataclasses.replace(trainer_cfg, seed=seed), sub))
        checkpoints[name] = runs[0].pop("checkpoint")
        for run in runs[1:]:
            run.pop("checkpoint")
        results[name] = runs[0] if len(runs) == 1 else _over_seeds(runs, seeds, HEADLINE_METRICS[task])
        if len(runs) > 1 and global_rank() == 0:
            m = HEADLINE_METRICS[task][0]
            print(f"  {name}: {m} {results[name][m]:.4f} +- {results[name][m + '_sd']:.4f} over seeds "
                  f"{', '.join(map(str, seeds))}", flush=True)  # fmt: skip
    const = ConstantModel(constant, task, n_classes)
    results["constant"] = {**score(const, scored, task, cfg, n_classes), "train_images": len(real_few),
                           "test_images": len(scored)}  # fmt: skip
    return {"metrics": _plain(results), "checkpoints": checkpoints, "headline": headline_metrics(task, results)}


def _over_seeds(runs: Sequence[dict[str, Any]], seeds: Sequence[int], headline: Sequence[str]) -> dict[str, Any]:
    """One set's metrics over several seeds: every score is the mean, ``<headline metric>_sd`` the sample standard
    deviation, ``seconds`` the sum, ``best_at_end`` true if any seed's net peaked at its last validation, and
    ``per_seed`` lists each seed's headline metrics, best step and validation score."""
    import numbers
    import statistics

    first = runs[0]
    out: dict[str, Any] = dict(first)
    for k, v in first.items():  # scores (floats of any kind); counts, flags and steps are ints or bools
        if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) and k != "seconds":
            out[k] = statistics.fmean(float(r[k]) for r in runs)
    for m in headline:
        if m in first:
            out[f"{m}_sd"] = statistics.stdev(float(r[m]) for r in runs)
    out["seconds"] = round(sum(float(r["seconds"]) for r in runs), 2)
    if "best_at_end" in first:
        out["best_at_end"] = any(bool(r["best_at_end"]) for r in runs)
    keep = [*(m for m in headline if m in first), "best_step", "val_score"]
    out["per_seed"] = [{"seed": s, **{k: r[k] for k in keep if k in r}} for s, r in zip(seeds, runs)]
    out.pop("best_step", None)  # per seed only: one step of several runs means nothing
    return out


def _pretrain_then_finetune(module, synthetic: Dataset, real: Dataset, val: Dataset | None, task: str,
                            cfg: DownstreamConfig, trainer_cfg, sub: Path, callbacks: Sequence = ()) -> dict[str, Any]:  # fmt: skip
    """The ``finetuned`` set: ``pretrain_steps`` on the synthetic set, then the rest of ``cfg.steps`` on the real
    one from the pretraining's best weights (``train_for_steps`` loads them); the fine-tuning's best step is scored.
    Both phases resume from their own ``last.ckpt`` (``sub/pretrain``, ``sub/finetune``)."""
    n1 = cfg.pretrain_steps
    first = train_for_steps(module, synthetic, val, task, dataclasses.replace(cfg, steps=n1, sets=["synthetic"]),
                            trainer_cfg, sub / "pretrain", callbacks)  # fmt: skip
    second = train_for_steps(module, real, val, task, dataclasses.replace(cfg, steps=cfg.steps - n1, sets=["real_few"]),
                             trainer_cfg, sub / "finetune", callbacks)  # fmt: skip
    info = {**second, "steps": first["steps"] + second["steps"], "pretrain_steps": first["steps"]}
    info["seconds"] = round(first["seconds"] + second["seconds"], 2)
    if "best_step" in second:
        info["best_step"] = first["steps"] + second["best_step"]
        info["pretrain_best_step"] = first["best_step"]
    return info


def _own_mean_shape(train: Dataset, fallback: Dataset) -> torch.Tensor:
    try:
        return relative_mean_shape(train)
    except DataError:  # a keypoint never visible (e.g. filtered by confidence) in this set: the real labels' shape
        return relative_mean_shape(fallback)


def headline_metrics(task: str, results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Flat ``{f"{metric}_{set}": value}`` of the task's headline metrics for every training set and the constant,
    ``{f"{metric}_{set}_sd": spread}`` for sets trained on several seeds (``downstream.repeats``), and
    ``{f"{metric}_synthetic_on_labeled": score}``, the synthetic-only net on the labeled images."""
    keys = [(m, f"{m}_{name}", name) for name in results for m in HEADLINE_METRICS[task]]
    keys += [(f"{m}_sd", f"{m}_{name}_sd", name) for name in results for m in HEADLINE_METRICS[task]]
    keys += [(f"{m}_on_labeled", f"{m}_{name}_on_labeled", name) for name in results for m in HEADLINE_METRICS[task]]
    return {out: float(results[name][m]) for m, out, name in keys if m in results[name]}


def _plain(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """JSON-friendly: ints stay ints, other numbers become floats, lists are converted element-wise."""

    def conv(v: Any) -> Any:
        if isinstance(v, (bool, int, str)) or v is None:
            return v
        if isinstance(v, Mapping):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return float(v)

    return {k: {m: conv(v) for m, v in r.items()} for k, r in results.items()}
