"""The ``label_real`` stage of ``label_loop``: label the real pool with the trained label generator
(:mod:`autolabel.handsoff.label_real`) and, when there is a real labeled test folder, label its images too and score
those direct labels against the ground truth (mIoU on the same scored slice as the downstream nets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolabel.errors import ConfigError
from pipelines.runner import Stage, StageContext


@dataclass
class LabelRealStageConfig:
    refine_steps: int = 0  # per-image latent refinement after the encoder (needs LPIPS weights; 0: encoder only)
    refine_lr: float = 0.1
    batch_size: int = 16
    score_test: bool = True  # also label data.test's images and score them against its masks (segmentation)

    def __post_init__(self) -> None:
        if self.refine_steps < 0 or self.batch_size < 1 or self.refine_lr <= 0:
            raise ConfigError(
                f"label_real.refine_steps={self.refine_steps}, batch_size={self.batch_size}, "
                f"refine_lr={self.refine_lr}: need refine_steps >= 0, batch_size >= 1, refine_lr > 0"
            )


def score_direct_labels(labels_dir: Path, test: Path, task: str, val_fraction: float) -> dict[str, Any]:
    """mIoU / pixel accuracy of ``autolabel label``'s masks in ``labels_dir`` against the test folder's masks, on the
    slice of the test folder the downstream nets are scored on (the rest of ``val_fraction``)."""
    import numpy as np
    import torch
    from PIL import Image

    from autolabel.data.labeled import FolderSubset, LabeledFolder, holdout_split
    from autolabel.engine.io import read_json
    from autolabel.metrics.dense import confusion_matrix, miou, pixel_accuracy

    if task != "segmentation":
        return {}
    size = int(read_json(labels_dir / "plan.json")["image_resolution"])
    gt = LabeledFolder(test, task="segmentation", size=size)
    _, rest = holdout_split(len(gt), val_fraction, seed=0)
    scored = FolderSubset(gt, rest)
    k = max(int(gt.n_classes), len(read_json(labels_dir / "plan.json").get("classes") or []))
    preds, gts = [], []
    for i in rest:
        sid = gt.ids[i]
        preds.append(torch.from_numpy(np.asarray(Image.open(labels_dir / "labels" / f"{sid}.png")).astype(np.int64)))
        gts.append(gt[i]["mask"].long())
    conf = confusion_matrix(torch.stack(preds), torch.stack(gts), k)
    m, per = miou(conf)
    return {"miou": float(m), "pixel_acc": float(pixel_accuracy(conf)), "test_images": len(scored),
            **{f"iou_class{i}": float(v) for i, v in enumerate(per)}}  # fmt: skip


def stage_label_real(ctx: StageContext) -> dict[str, Any]:
    from autolabel.engine.dist import inference_device
    from autolabel.handsoff.label_real import label_folder

    c: LabelRealStageConfig = ctx.cfg.label_real
    device = "cpu" if ctx.cfg.trainer.accelerator == "cpu" else inference_device("auto")
    kw = dict(generator=str(ctx.input_path("gan", "generator")), encoder=str(ctx.input_path("encoder", "checkpoint")),
              refine_steps=c.refine_steps, refine_lr=c.refine_lr, batch_size=c.batch_size, resize=True,
              device=device, progress=ctx.cfg.progress)  # fmt: skip
    checkpoint = ctx.input_path("labels", "checkpoint")
    pool = label_folder(checkpoint, ctx.input_path("data", "images"), ctx.dir / "pool_labels", **kw)
    metrics: dict[str, Any] = {k: pool[k] for k in ("n_images", "mean_uncertainty", "max_uncertainty",
                                                    "mean_inversion_mse")}  # fmt: skip
    metrics["most_uncertain"] = ", ".join(pool["most_uncertain"])
    metrics["least_uncertain"] = ", ".join(pool["least_uncertain"])
    figures = [str(f) for f in pool["figures"]]
    outputs = {"dataset": ctx.dir / "pool_labels", "review": pool["review"]}
    test = ctx.inputs["data"].get("outputs", {}).get("test")
    task = ctx.cfg.labels.model.task
    if c.score_test and test and task == "segmentation":
        from autolabel.data.layout import select_labeled

        images = select_labeled("test", test, None, task).images
        label_folder(checkpoint, images, ctx.dir / "test_labels", **kw)
        direct = score_direct_labels(ctx.dir / "test_labels", Path(test), task, ctx.cfg.downstream.val_fraction)
        metrics["direct"] = direct
        metrics["miou_direct"] = direct["miou"]  # headline: beside miou_real_few / miou_synthetic / miou_mixed
        outputs["test_labels"] = ctx.dir / "test_labels"
    captions = {figures[0]: "real pool, most uncertain labels: image | GAN inversion | label | uncertainty",
                figures[1]: "real pool, least uncertain labels: image | GAN inversion | label | uncertainty"}  # fmt: skip
    return {"outputs": outputs, "metrics": metrics, "figures": figures, "captions": captions}


STAGE = Stage(
    "label_real",
    stage_label_real,
    needs=["data", "gan", "encoder", "labels"],
    config_keys=["label_real", "downstream.val_fraction"],
    description="label the real pool by inversion (+ score direct labels on the test images)",
)
