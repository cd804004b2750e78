"""``autolabel select`` (which images of a pool to label) and ``autolabel label`` (label real images with a trained
HandsOff label generator): the two ends of the ``label_loop`` pipeline as commands of their own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from autolabel.config.hilander import HiLanderClusterConfig
from autolabel.errors import ConfigError
from pipelines.commands.base import Command, Invocation, print_metrics


@dataclass
class SelectCommand:
    images: str = MISSING  # the unlabeled pool (an image folder, subfolders allowed)
    n: int = 16  # images to label: one per largest cluster (more per cluster when there are fewer clusters)
    out: str = "selection"  # selected.csv, images/, masks/ (empty), LABEL_ME.txt, contact_sheet.png, pool.npz
    # how the pool is embedded: pixels (default: downsampled to image_size, centred, L2-normalized; always offline) |
    # torchscript:FILE | timm:NAME (+ weights=FILE, a frozen backbone whose weights are on disk)
    embedder: str = "pixels"
    weights: Optional[str] = None  # embedder=timm:NAME: the local weights file
    checkpoint: Optional[str] = None  # a `fit classifier` checkpoint: embed with the platform's feature encoder
    lander: Optional[str] = None  # a Hi-LANDER checkpoint: cluster with it at its calibrated tau (else k-means, k=n)
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)  # with lander=: k, tau, ...
    image_size: int = 0  # embedder input side (0: 16 for pixels, the model's own otherwise)
    seed: int = 0  # k-means seed
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n={self.n}: pick at least 1 image to label")
        if self.image_size < 0:
            raise ConfigError(f"image_size={self.image_size} must be >= 0 (0: the embedder's default)")


def select(cfg: SelectCommand, inv: Invocation) -> int:
    from autolabel.engine.dist import inference_device
    from autolabel.engine.paths import check_output_dir
    from autolabel.errors import DataError
    from autolabel.selection import select_images

    inputs = {"images": cfg.images, "checkpoint": cfg.checkpoint, "lander": cfg.lander, "weights": cfg.weights}
    out = check_output_dir(cfg.out, inputs, marker="selected.csv", command="autolabel select")
    labeled = sorted(p.name for p in (out / "masks").glob("*")) if out.is_dir() else []
    if labeled:
        raise DataError(f"out={cfg.out} already holds masks ({', '.join(labeled[:3])}): a new selection would not "
                        "match them -- choose a new out=")  # fmt: skip
    device = inference_device("auto") if cfg.device == "auto" else cfg.device
    res = select_images(cfg.images, cfg.n, out, embedder=cfg.embedder, weights=cfg.weights,
                        checkpoint=cfg.checkpoint, lander=cfg.lander, cluster_cfg=cfg.cluster,
                        image_size=cfg.image_size, seed=cfg.seed, device=device,
                        next_step=f"`autolabel fit labels labeled={out} ...` (or data.labeled={out})",
                        progress=cfg.progress)  # fmt: skip
    print_metrics("select", res["metrics"])
    o = res["outputs"]
    print(f"selected: {o['selected']}\ncontact sheet: {o['contact_sheet']}")
    print(f"label them: one mask per image of {o['images']} into {o['masks']} (see {out / 'LABEL_ME.txt'})")
    return 0


@dataclass
class LabelCommand:
    checkpoint: str = MISSING  # label generator checkpoint from `autolabel fit labels`
    images: str = MISSING  # the real images to label (an image folder, subfolders allowed)
    out: str = "labeled_real"  # the synthesize layout + reconstructions/, review.csv (most uncertain first)
    generator: Optional[str] = None  # default: the GAN the checkpoint was trained on (its recorded path)
    encoder: Optional[str] = None  # default: the inversion encoder the checkpoint records (`fit labels`' encoder=)
    refine_steps: int = 0  # per-image latent refinement after the encoder (LPIPS + MSE + distance to the encoder's)
    refine_lr: float = 0.1
    lpips_net: str = "vgg"  # refine_steps > 0: the LPIPS backbone (offline weights: `autolabel weights lpips`)
    lpips_weights: Optional[str] = None
    lpips_random: bool = False  # tests / smoke runs only: a random LPIPS backbone
    resize: bool = False  # resize (bilinear) and colour-convert images that differ from the GAN's resolution/channels
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True

    def __post_init__(self) -> None:
        if self.refine_steps < 0 or self.batch_size < 1 or self.refine_lr <= 0:
            raise ConfigError(f"refine_steps={self.refine_steps}, batch_size={self.batch_size}, "
                              f"refine_lr={self.refine_lr}: need refine_steps >= 0, batch_size >= 1, refine_lr > 0")  # fmt: skip


def label(cfg: LabelCommand, inv: Invocation) -> int:
    from autolabel.engine.dist import inference_device
    from autolabel.handsoff.label_real import label_folder

    device = inference_device("auto") if cfg.device == "auto" else cfg.device
    stats = label_folder(cfg.checkpoint, cfg.images, cfg.out, generator=cfg.generator, encoder=cfg.encoder,
                         refine_steps=cfg.refine_steps, refine_lr=cfg.refine_lr, lpips_net=cfg.lpips_net,
                         lpips_weights=cfg.lpips_weights, lpips_random=cfg.lpips_random, batch_size=cfg.batch_size,
                         resize=cfg.resize, device=str(device), progress=cfg.progress)  # fmt: skip
    print_metrics("label", {k: v for k, v in stats.items() if isinstance(v, (int, float))})
    print(f"dataset: {Path(cfg.out).resolve()}\nreview (most uncertain first): {stats['review']}")
    for fig in stats["figures"]:
        print(f"figure: {fig}")
    return 0


COMMANDS = (
    Command(
        "select",
        "pick the n images of an unlabeled pool to label (one per largest cluster) + a contact sheet",
        SelectCommand,
        select,
    ),
    Command(
        "label",
        "label real images with a trained label generator (inversion -> hypercolumns -> ensemble vote)",
        LabelCommand,
        label,
    ),
)
