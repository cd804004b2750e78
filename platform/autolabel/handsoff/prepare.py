"""Label-generator preparation: invert the few labeled images into W+ codes, build the per-pixel targets, and train
the ensemble on hypercolumns streamed on the trainer's device.

Memory is flat in the number of labeled images: per image only its W+ code and its label are kept. Resuming (a
``last.ckpt`` exists in the stage folder) reuses the saved ``latents.pt``, so the resumed run trains on exactly the
same W+ codes.
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

from autolabel.config.core import as_config
from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import ConfigError, DataError


def _saved_latents(path: Path, ids: list[str]) -> dict[str, Any] | None:
    """The inversion saved by an interrupted run of this stage (``latents.pt`` for the same images), else None."""
    from autolabel.engine.checkpoint_io import load_checkpoint
    from autolabel.errors import CheckpointError

    if not path.is_file():
        return None
    try:
        saved = load_checkpoint(path, what="saved inversion")
    except CheckpointError:
        return None
    if not isinstance(saved, dict) or list(saved.get("ids", [])) != list(ids) or "mse" not in saved:
        return None
    return {"ws": saved["ws"], "mse": saved["mse"], "lpips": saved.get("lpips")}


def train_label_generator(
    generator: str | Path,
    encoder: str | Path,
    labeled: str | Path,
    lg: LabelGeneratorConfig,
    lt: LabelTrainConfig,
    trainer_cfg: Any,
    stage_dir: Path,
    *,
    masks: str | Path | None = None,
    refine_steps: int = 0,
    refine_lr: float = 0.1,
    invert_batch_size: int = 8,
    lpips_net: str = "vgg",
    lpips_weights: str | None = None,
    lpips_random: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Invert the labeled images (``lg``: LabelGeneratorConfig, ``lt``: LabelTrainConfig), then train the label
    generator; returns the stage manifest (checkpoint, latents, metrics, the inversion figure)."""
    import torch
    from torchvision.utils import save_image

    from autolabel.data.layout import MAX_LABELED, load_labeled
    from autolabel.engine import fit, last_checkpoint
    from autolabel.engine.dist import global_rank, training_device
    from autolabel.engine.io import atomic_write_bytes
    from autolabel.gan import load_generator
    from autolabel.handsoff.encoder_module import load_encoder
    from autolabel.handsoff.hypercolumns import HypercolumnExtractor
    from autolabel.handsoff.invert import invert_images, latent_spread, reconstruction_weights
    from autolabel.handsoff.label_generator_module import LabelDataModule, LabelGeneratorModule, LabelTargets

    lg, lt = as_config(lg, LabelGeneratorConfig), as_config(lt, LabelTrainConfig)  # OmegaConf nodes too
    gen = load_generator(generator).eval()
    folder = load_labeled(labeled, masks, gen.resolution, lg.task, lg.n_classes if lg.n_classes > 0 else None)
    n = len(folder)
    if n > MAX_LABELED:
        raise DataError(
            f"{labeled} holds {n} labeled images; HandsOff is built for <= {MAX_LABELED}: "
            f"pass a folder with at most {MAX_LABELED} (e.g. a random subset)"
        )
    task = folder.task
    if task != lg.task:
        raise ConfigError(
            f"label_generator.task={lg.task} but {labeled} holds {task} labels: set label_generator.task={task}"
        )
    if task == "keypoints" and lg.n_keypoints > 0 and lg.n_keypoints != folder.n_keypoints:  # 0: from the labels
        raise ConfigError(
            f"label_generator.n_keypoints={lg.n_keypoints} but {labeled} labels {folder.n_keypoints} keypoints per "
            f"image: set label_generator.n_keypoints={folder.n_keypoints}"
        )
    items = [folder[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    if images.shape[1] != gen.img_channels:
        images = images.mean(1, keepdim=True) if gen.img_channels == 1 else images.expand(-1, gen.img_channels, -1, -1)
    device = training_device(trainer_cfg)
    gen.to(device)
    latents_path, recon_png = stage_dir / "latents.pt", stage_dir / "inversions.png"
    weights_png = stage_dir / "recon_weights.png"
    inv = _saved_latents(latents_path, folder.ids) if last_checkpoint(stage_dir) is not None else None
    if inv is None:  # a resumed stage reuses its latents: re-inverting (GPU kernels) might not reproduce them exactly
        enc = load_encoder(encoder, generator=gen).to(device)
        lp = None
        if refine_steps > 0:
            from autolabel.handsoff.lpips_weights import build_lpips

            lp = build_lpips(lpips_net, lpips_weights, random_backbone=lpips_random).to(device)
        parts = [
            invert_images(
                enc.encoder,
                gen,
                images[i : i + invert_batch_size],
                refine_steps=refine_steps,
                lr=refine_lr,
                lpips=lp,
                progress=progress,
            )
            for i in range(0, n, invert_batch_size)
        ]
        inv = {k: None if parts[0][k] is None else torch.cat([p[k].detach().cpu() for p in parts]) for k in parts[0]}
        del enc, lp
        buf = io.BytesIO()
        torch.save({"ws": inv["ws"], "ids": list(folder.ids), "mse": inv["mse"], "lpips": inv["lpips"]}, buf)
        atomic_write_bytes(latents_path, buf.getvalue())
        pairs = torch.stack([images, inv["recon"]], 1).flatten(0, 1)[:32]
        save_image((pairs.clamp(-1, 1) + 1) / 2, recon_png, nrow=8)
    ws = inv["ws"]
    wr = lg.working_resolution if lg.working_resolution > 0 else gen.resolution
    visible = None
    if task == "segmentation":
        labels = torch.stack([it["mask"] for it in items])
    elif task == "depth":
        labels = torch.stack([it["depth"] for it in items])[:, 0]
    else:
        labels = torch.stack([it["keypoints"] for it in items]).float()
        visible = torch.stack([it["visible"] for it in items])
    extractor = HypercolumnExtractor(gen, wr, list(lg.layers) or None)
    pixel_weight = None
    if lt.recon_weight > 0:  # trust each labeled pixel as far as the inversion reproduced the photo there
        with torch.no_grad():
            recon = torch.cat([extractor.features(ws[i : i + invert_batch_size].to(device))[0].float().cpu()
                               for i in range(0, n, invert_batch_size)])  # fmt: skip
        pixel_weight = reconstruction_weights(images, recon, wr, lt.recon_weight)
        if global_rank() == 0:  # photo / reconstruction / trust map (white = full weight), 8 per row
            trust = (
                torch.nn.functional.interpolate(pixel_weight[:, None], size=images.shape[-2:], mode="nearest") * 2 - 1
            )
            panels = [
                images[:8].expand(-1, 3, -1, -1),
                recon[:8].expand(-1, 3, -1, -1),
                trust[:8].expand(-1, 3, -1, -1),
            ]
            save_image((torch.cat(panels).clamp(-1, 1) + 1) / 2, weights_png, nrow=min(8, n))
    targets = LabelTargets(
        labels,
        task,
        wr,
        image_resolution=gen.resolution,
        n_classes=folder.n_classes if task == "segmentation" else None,
        visible=visible,
        min_class_pixels=lg.min_class_pixels,
        heatmap_sigma=lg.heatmap_sigma,
        ignore_index=getattr(folder, "ignore_index", None),  # VOC void borders: no loss there
        pixel_weight=pixel_weight,
    )
    names = folder.names  # class / keypoint names and skeleton: into the checkpoint, then plan.json / manifest.jsonl
    n_out = targets.n_outputs
    model = dataclasses.replace(lg, task=task, n_classes=n_out if task == "segmentation" else -1,
                                n_keypoints=n_out if task == "keypoints" else 0, working_resolution=wr,
                                layers=list(lg.layers), hidden=list(lg.hidden))  # fmt: skip
    in_channels = extractor.channels

    def make_module(index: torch.Tensor | None = None) -> LabelGeneratorModule:
        torch.manual_seed(lt.seed)  # member initialization: a function of label_train.seed only
        module = LabelGeneratorModule(
            model,
            lt,
            in_channels=in_channels,
            class_names=names.get("classes"),
            keypoint_names=names.get("keypoint_names"),
            skeleton=names.get("skeleton"),
            generator_path=str(Path(generator).resolve()),
            encoder_path=str(Path(encoder).resolve()),
        )
        if index is None:
            return module.attach(gen, ws, targets)
        return module.attach(gen, ws[index], targets.subset(index))

    def length_of(per_epoch: int) -> int:
        return int(math.ceil(lt.epochs * per_epoch)) if lt.epochs > 0 else lt.max_steps

    choice, figures = None, [str(p) for p in (recon_png, weights_png) if p.is_file()]
    if lt.select_folds >= 2:
        from autolabel.handsoff.length import choose_length, curve_figure, final_steps

        def train_fold(index: torch.Tensor, callback: Any, fold_dir: Path) -> int:
            fold = make_module(index)
            per_epoch = fold.steps_per_epoch
            tc = dataclasses.replace(trainer_cfg, max_steps=length_of(per_epoch), max_epochs=None)
            fit(fold, LabelDataModule(per_epoch), tc, fold_dir, callbacks=[callback])
            return per_epoch

        def say(line: str) -> None:
            if global_rank() == 0:
                print(line, flush=True)

        select_dir = stage_dir / "select"
        choice = choose_length(train_fold, ws, targets, lt.select_folds, lt.select_every, select_dir, lt.seed, say)
        fig = curve_figure(choice, stage_dir / "length_curve.png")
        figures += [str(fig)] if fig is not None else []
    module = make_module()
    per_epoch = module.steps_per_epoch
    max_steps = length_of(per_epoch) if choice is None else final_steps(choice, per_epoch)
    if choice is not None and global_rank() == 0:
        print(
            f"length: {choice.epochs:.2f} epochs over the labeled pixels ({max_steps} steps), chosen on "
            f"{lt.select_folds} held-out folds ({choice.metric} {choice.score:.4f})",
            flush=True,
        )
    tc = dataclasses.replace(trainer_cfg, max_steps=max_steps, max_epochs=None)
    trainer = fit(module, LabelDataModule(per_epoch), tc, stage_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics.update(
        labeled_images=n,
        inversion_mse=float(inv["mse"].mean()),
        hypercolumn_width=module.ensemble.in_channels,
        steps=int(trainer.global_step),
        steps_per_epoch=per_epoch,
        epochs_over_labeled_pixels=float(trainer.global_step) / per_epoch,
        updates_per_forward=module.plan.updates,
        pixels_per_forward=module.plan.total,
        n_outputs=targets.n_outputs,
    )
    if choice is not None:
        metrics.update(length_epochs=choice.epochs, length_heldout_score=choice.score, length_folds=lt.select_folds)
    if inv.get("lpips") is not None:
        metrics["inversion_lpips"] = float(inv["lpips"].mean())
    if pixel_weight is not None:
        metrics["recon_weight_mean"] = float(pixel_weight.mean())  # the labeled pixels' mean trust
    metrics.update({f"inversion_spread_{k}": v for k, v in latent_spread(ws, gen).items()})  # ~0: collapsed encoder
    return {
        "outputs": {"checkpoint": stage_dir / "checkpoints" / "last.ckpt", "latents": stage_dir / "latents.pt"},
        "metrics": metrics,
        "figures": figures,
    }
