"""How long to train the label generator, chosen on held-out labeled images (k-fold over the labeled images).

With a few labeled images the pixel ensemble overfits them: on the horses (benchmarks/README.md, "The label
generator's length, chosen on held-out labeled images") the synthetic labels got better when it trained 300 instead of
1,000 steps, and no single step count fits every dataset. So, with ``label_train.select_folds = k >= 2``, the labeled
images are split into ``k`` folds; for each fold an ensemble trains on the other images for the configured length and
is scored every ``select_every`` steps on the held-out fold's inverted images (their hypercolumns, the same way
synthesis labels an image):

- segmentation: mIoU over the classes present in the held-out labels or predictions (higher is better);
- keypoints: minus the mean distance of the decoded keypoints to the visible labeled ones, in working-grid pixels
  divided by the working resolution;
- depth: minus the RMSE.

The step with the best mean score over the folds (the earliest on ties), converted to epochs over the labeled pixels,
is the length the final ensemble trains on *all* labeled images. The configured length is the upper bound. Each
finished fold writes its curve to ``select/fold<i>/curve.json``; an interrupted fold is trained again from scratch, so a
resumed stage picks the same length.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor

from autolabel.engine.io import read_json, write_json
from autolabel.errors import ConfigError
from autolabel.handsoff.hypercolumns import HypercolumnExtractor
from autolabel.handsoff.label_generator import LabelGeneratorEnsemble, decode_keypoints
from autolabel.handsoff.label_generator_module import LabelTargets
from autolabel.handsoff.synthesis import label_pixels


@torch.no_grad()
def heldout_score(ensemble: LabelGeneratorEnsemble, extractor: HypercolumnExtractor, ws: Tensor,
                  targets: LabelTargets, chunk_pixels: int = 16384) -> float:  # fmt: skip
    """The ensemble's score on labeled images it did not train on (W+ codes ``ws [N, num_ws, w_dim]``, their
    ``targets``); higher is better (see the module docstring). The ensemble is scored in eval mode, as synthesis uses
    it, and put back in the mode it was in."""
    if len(ws) != len(targets):
        raise ConfigError(f"{len(ws)} latents for {len(targets)} held-out targets: pass one W+ code per image")
    was_training = ensemble.training
    ensemble.eval()
    gen = extractor.generator
    dev, gdtype = next(gen.parameters()).device, next(gen.parameters()).dtype
    r = extractor.resolution
    inter = union = None
    errors: list[Tensor] = []
    try:
        for i in range(len(targets)):
            _, feats = extractor.features(ws[i : i + 1].to(dev, gdtype))
            pred = label_pixels(ensemble, extractor, feats, chunk_pixels)[0]
            if targets.task == "segmentation":
                y = targets.labels[i].long().to(dev)
                p = pred["label"].long()
                valid = y != targets.ignore_index if targets.ignore_index is not None else torch.ones_like(y).bool()
                k = targets.n_outputs
                yv, pv = y[valid], p[valid]
                i_k = torch.bincount(yv[yv == pv], minlength=k)[:k].double()
                u_k = (torch.bincount(yv, minlength=k)[:k] + torch.bincount(pv, minlength=k)[:k]).double() - i_k
                inter = i_k if inter is None else inter + i_k
                union = u_k if union is None else union + u_k
            elif targets.task == "keypoints":
                coords, _ = decode_keypoints(pred["heatmap"].float().permute(2, 0, 1)[None])
                vis = targets.visible[i].to(coords.device)
                if vis.any():
                    d = (coords[0] - targets.labels[i].to(coords.device)).norm(dim=-1)[vis]
                    errors.append(d / r)
            else:
                errors.append((pred["depth"].float() - targets.labels[i].to(dev)).pow(2).flatten())
    finally:
        ensemble.train(was_training)
    if targets.task == "segmentation":
        present = union > 0
        return float((inter[present] / union[present]).mean()) if bool(present.any()) else 0.0
    if not errors:
        return 0.0
    err = torch.cat(errors)
    return -float(err.mean()) if targets.task == "keypoints" else -float(err.mean().sqrt())


class HeldOutCurve(pl.Callback):
    """Scores the training ensemble on held-out images every ``every`` optimizer steps and at the last step."""

    def __init__(self, ws: Tensor, targets: LabelTargets, every: int) -> None:
        if every < 1:
            raise ConfigError(f"select_every={every} must be >= 1 (optimizer steps between held-out scores)")
        self.ws, self.targets, self.every = ws, targets, int(every)
        self.curve: dict[int, float] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args, **kwargs) -> None:
        step = int(trainer.global_step)
        if step % self.every == 0 or step >= int(trainer.max_steps):
            ext = pl_module.extractor_on(pl_module.device)
            self.curve[step] = heldout_score(pl_module.ensemble, ext, self.ws, self.targets)


def fold_indices(n: int, k: int, seed: int = 0) -> list[Tensor]:
    """``k`` disjoint held-out folds covering ``range(n)`` (sizes differ by at most one), shuffled by ``seed``."""
    if k < 2:
        raise ConfigError(f"select_folds={k}: use 0 (train the configured length) or >= 2 folds")
    if n < k:
        raise ConfigError(f"select_folds={k} needs at least {k} labeled images (there are {n}): lower "
                          f"label_train.select_folds to <= {n}, or 0 to train the configured length")  # fmt: skip
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [f.sort().values for f in torch.tensor_split(order, k)]


@dataclasses.dataclass
class LengthChoice:
    """The result of :func:`choose_length`: the chosen length in epochs over the labeled pixels, its step on the
    folds, the mean held-out score there, and every fold's curve (step -> score)."""

    epochs: float
    step: int
    score: float
    curves: list[dict[int, float]]
    metric: str

    def mean_curve(self) -> dict[int, float]:
        steps = sorted(set.intersection(*(set(c) for c in self.curves)))
        return {s: sum(c[s] for c in self.curves) / len(self.curves) for s in steps}


def metric_name(task: str) -> str:
    return {"segmentation": "held-out mIoU", "keypoints": "-(held-out keypoint error / resolution)",
            "depth": "-(held-out RMSE)"}[task]  # fmt: skip


def choose_length(
    train_fold: Callable[[Tensor, HeldOutCurve, Path], int],
    ws: Tensor,
    targets: LabelTargets,
    folds: int,
    every: int,
    out_dir: Path,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> LengthChoice:
    """Run the k-fold length search. ``train_fold(train_index, callback, fold_dir)`` trains one ensemble on the
    images ``train_index`` with ``callback`` attached and returns its steps per epoch; each fold's curve is saved."""
    n = len(targets)
    curves: list[dict[int, float]] = []
    per_epoch: list[int] = []
    for i, held in enumerate(fold_indices(n, folds, seed)):
        fold_dir = out_dir / f"fold{i}"
        done = fold_dir / "curve.json"
        if done.is_file():
            saved = read_json(done)
            curve = {int(s): float(v) for s, v in saved["curve"].items()}
            per_epoch.append(int(saved["steps_per_epoch"]))
        else:
            if fold_dir.exists():  # an interrupted fold: train it again from scratch (same seeds -> same curve)
                shutil.rmtree(fold_dir)
            fold_dir.mkdir(parents=True)
            keep = torch.ones(n, dtype=torch.bool)
            keep[held] = False
            cb = HeldOutCurve(ws[held], targets.subset(held), every)
            per_epoch.append(int(train_fold(keep.nonzero()[:, 0], cb, fold_dir)))
            curve = dict(cb.curve)
            write_json(done, {"held_out": held.tolist(), "steps_per_epoch": per_epoch[-1],
                              "curve": {str(s): v for s, v in sorted(curve.items())}})  # fmt: skip
        if not curve:
            raise ConfigError(f"fold {i} recorded no held-out score: it trained no step; raise label_train.max_steps "
                              "(or epochs)")  # fmt: skip
        curves.append(curve)
        best = max(curve.values())
        log(f"length selection: fold {i + 1}/{folds} done (held out {len(held)} images, best {best:.4f})")
    choice = LengthChoice(0.0, 0, 0.0, curves, metric_name(targets.task))
    mean = choice.mean_curve()
    if not mean:
        raise ConfigError("the folds share no scored step: lower label_train.select_every, or train by max_steps")
    top = max(mean.values())
    step = min(s for s, v in mean.items() if v == top)  # the earliest of equal scores
    choice.step, choice.score = step, top
    choice.epochs = step / (sum(per_epoch) / len(per_epoch))
    return choice


def final_steps(choice: LengthChoice, steps_per_epoch: int) -> int:
    """Optimizer steps for the ensemble on all labeled images: the chosen epochs at its own steps per epoch."""
    return max(1, int(math.ceil(choice.epochs * steps_per_epoch - 1e-9)))


def curve_figure(choice: LengthChoice, path: Path) -> Path | None:
    """Every fold's held-out score and their mean vs optimizer step, the chosen step marked; None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 3.0), dpi=100)
    for i, c in enumerate(choice.curves):
        s = sorted(c)
        ax.plot(s, [c[t] for t in s], lw=1, alpha=0.5, label=f"fold {i + 1}")
    mean = choice.mean_curve()
    s = sorted(mean)
    ax.plot(s, [mean[t] for t in s], color="k", lw=2, marker="o", ms=3, label="mean")
    ax.axvline(choice.step, color="k", ls="--", lw=1, label=f"chosen: {choice.epochs:.2f} epochs")
    ax.set_xlabel("optimizer steps (fold ensembles)")
    ax.set_ylabel(choice.metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
