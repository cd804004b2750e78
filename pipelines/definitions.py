"""The bundled pipelines (``autolabel run pipeline=NAME``) and their config schema.

``handsoff_then_hilander`` (the default): render the procedural dataset -> train StyleGAN2 -> train the inversion
encoder -> invert the few labeled images and train the label generator -> synthesize a filtered labeled dataset ->
train a segmentation net on it and on the few real labels, score both on real test images -> then the ``hilander``
stages below on the dataset's unlabeled pool. ``handsoff`` stops after the downstream check.

``hilander``: prepare data -> train the feature encoder on the meta-training classes -> embed the held-out
meta-training images and the pool ->
meta-train Hi-LANDER -> cluster the unlabeled pool (with baselines when it has labels) -> report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from autolabel.config import RunConfig, TrainerConfig
from autolabel.config.classifier import ClassifierConfig
from autolabel.config.gan import GANTrainConfig, GeneratorConfig
from autolabel.config.hilander import CalibrationConfig, HiLanderClusterConfig, HiLanderTrainConfig, LanderModelConfig
from autolabel.config.inversion import EncoderConfig, EncoderTrainConfig
from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
from autolabel.errors import ConfigError, DataError
from pipelines.runner import Pipeline, Stage, StageContext

SOURCES = ("procedural", "digits", "fashion_mnist", "folders", "features")
HANDSOFF_SOURCES = ("procedural", "folders")
HILANDER_SOURCES = ("digits", "fashion_mnist", "folders", "features")
# data.root=DIR (source folders): the conventional layout of a dataset folder, key -> subfolder
ROOT_LAYOUT = {"images": "images", "labeled": "labeled", "test": "test", "train_dir": "train", "pool_dir": "pool"}
MAX_LABELED = 50  # HandsOff's premise


@dataclass
class DataConfig:
    """Where a pipeline's data comes from (``data.source``; unset: ``procedural`` for the handsoff pipelines,
    ``digits`` for ``hilander``, ``folders`` when ``data.root`` is given).

    * ``procedural`` (handsoff pipelines): the bundled shapes dataset, rendered from ``shapes.*`` settings.
    * ``folders``: your own images. HandsOff takes ``images`` (unlabeled pool: GAN + encoder training), ``labeled``
      (<= 50 labeled images: ``images/`` + ``masks/`` | ``keypoints.csv`` | ``depth/``, or an image folder plus
      ``labeled_masks``) and optionally ``test`` (a real labeled folder for the downstream check; without it that check
      is skipped). Hi-LANDER takes ``train_dir`` (one subfolder per meta-training class) and ``pool_dir`` (images to
      cluster; class subfolders, if any, are used only for scoring; default for the handsoff pipelines: ``images``).
      ``root=DIR`` fills every unset one from ``DIR/images``, ``DIR/labeled``, ``DIR/test``, ``DIR/train``,
      ``DIR/pool`` (the last three when they exist).
    * ``digits`` (scikit-learn, bundled) and ``fashion_mnist`` (Debian package; ``root``: the IDX folder), hilander
      only, are split by class: ``train_classes`` train the encoder and Hi-LANDER, ``pool_classes`` form the pool to
      cluster (disjoint: Hi-LANDER clusters categories it never saw).
    * ``features`` (hilander only): your own embeddings, ``train_features`` (with labels) and ``pool_features``.
    """

    source: Optional[str] = None
    root: Optional[str] = None
    images: Optional[str] = None
    labeled: Optional[str] = None
    labeled_masks: Optional[str] = None  # masks in their own folder: then `labeled` is a plain image folder
    n_labeled: int = -1  # use the first N labeled images by file name (-1: all, at most 50)
    test: Optional[str] = None
    test_masks: Optional[str] = None  # like labeled_masks; images also in the labeled selection are left out
    train_dir: Optional[str] = None
    pool_dir: Optional[str] = None
    train_features: Optional[str] = None  # source=features: your own labeled meta-training pool (.npz with labels)
    pool_features: Optional[str] = None  # source=features: your own pool to cluster (.npz/.npy)
    train_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    pool_classes: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9])
    per_class: int = -1  # cap per class (-1: all)
    # Share of the meta-training images held out from the encoder and used only to meta-train Hi-LANDER: embeddings of
    # images the encoder never saw are as noisy as those of the pool, so the GNN learns to link under realistic noise
    # (trained on the encoder's own training images it sees near-perfect clusters and learns to link everything).
    gnn_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in SOURCES:
            raise ConfigError(f"data.source={self.source!r}: use one of {', '.join(SOURCES)}")
        if self.source == "features" and not (self.train_features and self.pool_features):
            raise ConfigError("data.source=features needs data.train_features=TRAIN.npz (with labels) and "
                              "data.pool_features=POOL.npz: bring your own embeddings, the encoder stages are skipped")  # fmt: skip
        if not 0.0 <= self.gnn_fraction < 1.0:
            raise ConfigError(f"data.gnn_fraction={self.gnn_fraction} must be in [0, 1)")
        if self.n_labeled == 0 or self.n_labeled < -1 or self.n_labeled > MAX_LABELED:
            raise ConfigError(f"data.n_labeled={self.n_labeled}: use 1..{MAX_LABELED} (HandsOff needs few labels) "
                              "or -1 for all of data.labeled")  # fmt: skip
        for masks, images in (("labeled_masks", "labeled"), ("test_masks", "test")):
            if getattr(self, masks) and not (getattr(self, images) or self.root):
                raise ConfigError(f"data.{masks} is set but data.{images} is not: give the images folder too")
        overlap = set(self.train_classes) & set(self.pool_classes)
        if self.source in ("digits", "fashion_mnist") and overlap:
            raise ConfigError(
                f"data.train_classes and data.pool_classes share {sorted(overlap)}: the pool must hold unseen classes"
            )

    def source_for(self, handsoff: bool) -> str:
        """The effective source for a handsoff pipeline (``handsoff=True``) or the hilander pipeline."""
        if self.source is not None:
            return self.source
        if self.root:
            return "folders"
        return "procedural" if handsoff else "digits"

    def folder(self, key: str, *, optional: bool = False) -> Optional[str]:
        """``data.<key>``, else ``<root>/<layout name>`` (optional ones only when that folder exists)."""
        value = getattr(self, key)
        if value or not self.root:
            return value
        derived = Path(self.root) / ROOT_LAYOUT[key]
        return str(derived) if (not optional or derived.is_dir()) else None


PoolDataConfig = DataConfig  # the name it had when only the hilander pipeline read it


@dataclass
class ClassifierStageConfig:
    model: ClassifierConfig = field(default_factory=lambda: ClassifierConfig(image_size=16, width=24, batch_size=32))
    max_epochs: int = 30


@dataclass
class HiLanderStageConfig:
    model: LanderModelConfig = field(default_factory=lambda: LanderModelConfig(hidden=256))
    train: HiLanderTrainConfig = field(default_factory=HiLanderTrainConfig)
    # tau (and the link calibration) come from the checkpoint: fit holds out a share of the meta-training classes
    cluster: HiLanderClusterConfig = field(default_factory=HiLanderClusterConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    max_epochs: int = 150
    baselines: list[str] = field(default_factory=lambda: ["kmeans", "agglomerative"])


def stage_trainer(cfg: PipelineConfig, max_epochs: int) -> TrainerConfig:
    return dataclasses.replace(cfg.trainer, max_epochs=max_epochs, max_steps=-1)


# ----------------------------------------------------------------------------------------------- stages


def stage_data(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.arrays import (
        FASHION_MNIST_CLASSES,
        FASHION_MNIST_ROOT,
        export_class_folders,
        load_digits_arrays,
        load_fashion_mnist,
        select_classes,
    )

    d: DataConfig = ctx.cfg.data
    source = d.source_for(handsoff=False)
    if source == "features":
        from autolabel.data.pools import load_feature_pool

        train, pool = load_feature_pool(d.train_features), load_feature_pool(d.pool_features)  # type: ignore[arg-type]
        if not train.has_labels:
            raise ConfigError(f"data.train_features={d.train_features} has no labels: Hi-LANDER meta-trains on them")
        if train.dim != pool.dim:
            raise ConfigError(f"data.train_features has {train.dim}-d features but data.pool_features {pool.dim}-d: "
                              "embed both with the same encoder")  # fmt: skip
        return {"outputs": {"train_features": Path(d.train_features), "pool_features": Path(d.pool_features)},  # type: ignore[arg-type]
                "metrics": {"meta_images": train.n, "pool_images": pool.n}}  # fmt: skip
    if source == "folders":
        train_dir, pool_dir = Path(d.folder("train_dir")).resolve(), Path(d.folder("pool_dir")).resolve()  # type: ignore[arg-type]
        return {"outputs": {"train_dir": train_dir, "meta_dir": train_dir, "pool_dir": pool_dir}}
    if source == "digits":
        x_tr, y_tr = load_digits_arrays()
        x_te, y_te = x_tr, y_tr
        names = [f"digit{i}" for i in range(10)]
    else:
        root = d.root or FASHION_MNIST_ROOT
        x_tr, y_tr = load_fashion_mnist(root, "train")
        x_te, y_te = load_fashion_mnist(root, "test")
        names = list(FASHION_MNIST_CLASSES)
    x_a, y_a = select_classes(x_tr, y_tr, d.train_classes, d.per_class, d.seed)
    x_b, y_b = select_classes(x_te, y_te, d.pool_classes, d.per_class, d.seed)
    gnn = np.random.default_rng(d.seed).random(len(x_a)) < d.gnn_fraction
    train_dir = export_class_folders(x_a[~gnn], y_a[~gnn], ctx.dir / "train", class_names=names,
                                     progress=ctx.cfg.progress)  # fmt: skip
    meta_dir = train_dir
    if gnn.any():
        meta_dir = export_class_folders(x_a[gnn], y_a[gnn], ctx.dir / "meta", class_names=names,
                                        progress=ctx.cfg.progress)  # fmt: skip
    pool_dir = export_class_folders(x_b, y_b, ctx.dir / "pool", class_names=names, progress=ctx.cfg.progress)
    return {"outputs": {"train_dir": train_dir, "meta_dir": meta_dir, "pool_dir": pool_dir},
            "metrics": {"encoder_images": int((~gnn).sum()), "meta_images": int(gnn.sum()),
                        "pool_images": len(x_b)}}  # fmt: skip


def stage_classifier(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.classifier import train_classifier

    c: ClassifierStageConfig = ctx.cfg.classifier
    if "train_features" in ctx.inputs["data"].get("outputs", {}):
        return {"metrics": {"skipped": "features given (data.source=features)"}}
    return train_classifier(ctx.input_path("data", "train_dir"), c.model, stage_trainer(ctx.cfg, c.max_epochs), ctx.dir)


def stage_embed(ctx: StageContext) -> dict[str, Any]:
    import torch

    from autolabel.tasks.classifier import embed_folder

    given = ctx.inputs["data"].get("outputs", {})
    if "train_features" in given:  # bring-your-own embeddings: pass them on
        return {
            "outputs": {"train_features": Path(given["train_features"]), "pool_features": Path(given["pool_features"])}
        }
    device = "cuda" if torch.cuda.is_available() and ctx.cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu"
    ckpt = ctx.input_path("classifier", "checkpoint")
    tr = embed_folder(ckpt, ctx.input_path("data", "meta_dir"), ctx.dir / "train.npz", device=device,
                      progress=ctx.cfg.progress)  # fmt: skip
    po = embed_folder(ckpt, ctx.input_path("data", "pool_dir"), ctx.dir / "pool.npz", device=device,
                      progress=ctx.cfg.progress)  # fmt: skip
    return {"outputs": {"train_features": tr["path"], "pool_features": po["path"]},
            "metrics": {"train_n": tr["n"], "pool_n": po["n"], "dim": tr["dim"]}}  # fmt: skip


def stage_hilander(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.hilander import train_hilander

    h: HiLanderStageConfig = ctx.cfg.hilander
    return train_hilander(ctx.input_path("embed", "train_features"), None, h.model, h.train,
                          stage_trainer(ctx.cfg, h.max_epochs), ctx.dir, h.calibration, h.cluster)  # fmt: skip


def stage_cluster(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.images import list_images
    from autolabel.engine.io import write_json
    from autolabel.viz import cluster_gallery, gallery_caption
    from pipelines.stages.hilander import cluster_features, write_clusters_csv

    h: HiLanderStageConfig = ctx.cfg.hilander
    res = cluster_features(ctx.input_path("hilander", "checkpoint"), ctx.input_path("embed", "pool_features"),
                           h.cluster, list(h.baselines))  # fmt: skip
    csv_path = write_clusters_csv(ctx.dir / "clusters.csv", res["ids"], res["labels"], res["columns"])
    metrics: dict[str, Any] = dict(res.get("metrics", {}))
    metrics["levels"] = len(res["levels"])
    metrics["tau"] = res["tau"]
    metrics["tau_source"] = res["tau_source"]
    if "baselines" in res:
        metrics["baselines"] = res["baselines"]
    write_json(ctx.dir / "metrics.json", metrics)
    figures, captions = [], {}
    if "pool_dir" in ctx.inputs["data"].get("outputs", {}):  # a gallery needs the images (not given with features)
        files = list_images(ctx.input_path("data", "pool_dir"))
        truth = None
        if "metrics" in res:
            from autolabel.data.pools import load_feature_pool

            truth = load_feature_pool(ctx.input_path("embed", "pool_features")).labels
        gallery = str(cluster_gallery(files, res["labels"], ctx.dir / "cluster_gallery.png", truth=truth))
        figures.append(gallery)
        captions[gallery] = "cluster gallery: " + gallery_caption(res["labels"])
    return {"outputs": {"clusters": csv_path}, "metrics": metrics, "figures": figures, "captions": captions,
            "timings": res["timings"], "hierarchy": res["levels"]}  # fmt: skip


HILANDER = Pipeline(
    "hilander",
    [
        Stage("data", stage_data, config_keys=["data"], description="prepare meta-training and pool image folders"),
        Stage(
            "classifier",
            stage_classifier,
            needs=["data"],
            config_keys=["classifier", "trainer.precision", "trainer.seed"],
            description="train the feature encoder on the meta-training classes",
            distributed=True,
        ),  # fmt: skip
        Stage("embed", stage_embed, needs=["data", "classifier"], description="embed both image folders"),
        Stage(
            "hilander",
            stage_hilander,
            needs=["embed"],
            config_keys=[
                "hilander.model",
                "hilander.train",
                "hilander.max_epochs",
                "hilander.calibration",
                "trainer.precision",
                "trainer.seed",
            ],
            description="meta-train Hi-LANDER",
            distributed=True,
        ),  # fmt: skip
        Stage(
            "cluster",
            stage_cluster,
            needs=["data", "embed", "hilander"],
            config_keys=["hilander.cluster", "hilander.baselines"],
            description="cluster the unseen pool, compare baselines",
        ),  # fmt: skip
    ],
    description="cluster an unlabeled pool into unseen categories",
    validate=lambda cfg: validate_hilander_data(cfg),  # defined with the other data checks below
)

PIPELINES: dict[str, Pipeline] = {"hilander": HILANDER}


def get_pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        import difflib

        near = difflib.get_close_matches(name, list(PIPELINES), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"pipeline={name!r} is unknown{hint} (available: {', '.join(PIPELINES)})")
    return PIPELINES[name]


def headline(results: list[Any]) -> dict[str, Any]:
    """The numbers a person wants first, from the last stage that produced clustering metrics."""
    out: dict[str, Any] = {}
    for r in results:
        m = r.manifest.get("metrics", {})
        for key in (
            "miou_synthetic",
            "miou_real_few",
            "pairwise_f",
            "bcubed_f",
            "nmi",
            "n_clusters",
            "n_true_clusters",
            "tau",
        ):
            if key in m and isinstance(m[key], (int, float, np.integer, np.floating)):
                out[key] = m[key]
        if "baselines" in m:
            out["baselines"] = {k: {x: v[x] for x in ("pairwise_f", "bcubed_f", "nmi", "n_clusters", "seconds")}
                                for k, v in m["baselines"].items()}  # fmt: skip
    return out


# ------------------------------------------------------------------------------------- handsoff (+ hilander)


@dataclass
class ShapesDataConfig:
    """The bundled procedural dataset (``autolabel.data.procedural``): objects with masks, keypoints, depth and 12
    categories (shape x colour), rendered from a seed -- nothing is downloaded."""

    size: int = 16
    n_pool: int = 480  # unlabeled images: GAN + encoder training, and the pool clustered by Hi-LANDER
    n_labeled: int = 16  # HandsOff's few labeled images (<= 50)
    n_test: int = 120  # real labeled images for the downstream check
    meta_categories: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])  # encoder + GNN training
    pool_categories: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])  # clustered, never trained on
    seed: int = 0


@dataclass
class GANStageConfig:
    # Bring your own GAN: a rosinality .pt, NVIDIA stylegan2-ada .pkl or autolabel generator.pt -> no GAN training
    pretrained: Optional[str] = None
    kimg: float = 6.0
    model: GeneratorConfig = field(
        default_factory=lambda: GeneratorConfig(
            resolution=16, z_dim=64, w_dim=64, n_mapping=2, channel_base=512, channel_max=64
        )  # fmt: skip
    )
    train: GANTrainConfig = field(default_factory=lambda: GANTrainConfig(batch_size=16, r1_gamma=1.0))


@dataclass
class EncoderStageConfig:
    model: EncoderConfig = field(default_factory=lambda: EncoderConfig(width=16, max_width=64))
    # lpips_weight=0: pixel MSE only, so the demo needs no ImageNet weights; set 10 once `autolabel weights lpips` ran
    train: EncoderTrainConfig = field(
        default_factory=lambda: EncoderTrainConfig(
            phase1_steps=300, finetune_steps=60, batch_size=16, lr=1e-3, lpips_weight=0.0
        )  # fmt: skip
    )


@dataclass
class LabelsStageConfig:
    refine_steps: int = 0
    model: LabelGeneratorConfig = field(
        default_factory=lambda: LabelGeneratorConfig(n_members=5, hidden=[64, 32], fp16=False, min_class_pixels=4)
    )
    train: LabelTrainConfig = field(
        default_factory=lambda: LabelTrainConfig(
            max_steps=300, pixels_per_image=256, batch_pixels=256, images_per_step=5
        )  # fmt: skip
    )


@dataclass
class SynthesisStageConfig:
    n: int = 300
    seed: int = 0
    truncation_psi: float = 0.7
    batch_size: int = 16
    filter_fraction: float = 0.1
    drop_least_uncertain: int = 30
    devices: int = 1


@dataclass
class DownstreamStageConfig:
    max_epochs: int = 15
    base: int = 16
    depth: int = 2
    batch_size: int = 16
    # a fixed share of the real test folder picks each net's best epoch; metrics are reported on the rest (0: last
    # epoch, scored on the whole test folder)
    val_fraction: float = 0.2


@dataclass
class PipelineConfig:
    """``autolabel run``: which pipeline, and the settings of every stage any bundled pipeline has."""

    pipeline: str = "handsoff_then_hilander"  # handsoff_then_hilander | handsoff | hilander
    from_stage: Optional[str] = None  # force this stage and everything after it to run again
    until_stage: Optional[str] = None  # stop after this stage
    shapes: ShapesDataConfig = field(default_factory=ShapesDataConfig)  # data.source=procedural (handsoff pipelines)
    data: DataConfig = field(default_factory=DataConfig)  # where the data comes from (procedural / your folders ...)
    gan: GANStageConfig = field(default_factory=GANStageConfig)
    encoder: EncoderStageConfig = field(default_factory=EncoderStageConfig)
    labels: LabelsStageConfig = field(default_factory=LabelsStageConfig)
    synthesis: SynthesisStageConfig = field(default_factory=SynthesisStageConfig)
    downstream: DownstreamStageConfig = field(default_factory=DownstreamStageConfig)
    classifier: ClassifierStageConfig = field(default_factory=ClassifierStageConfig)
    hilander: HiLanderStageConfig = field(default_factory=HiLanderStageConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(name="pipeline"))
    progress: bool = True

    def __post_init__(self) -> None:
        d = self.data
        if self.pipeline == "hilander":
            source = d.source_for(handsoff=False)
            if source not in HILANDER_SOURCES:
                raise ConfigError(f"data.source={source} feeds the handsoff pipelines; pipeline=hilander takes "
                                  f"data.source={' | '.join(HILANDER_SOURCES)}")  # fmt: skip
            if source == "folders" and not (d.folder("train_dir") and d.folder("pool_dir")):
                raise ConfigError("data.source=folders needs data.train_dir=DIR (class subfolders) and "
                                  "data.pool_dir=DIR (or data.root=DIR holding train/ and pool/)")  # fmt: skip
        elif self.pipeline in ("handsoff", "handsoff_then_hilander"):
            source = d.source_for(handsoff=True)
            if source not in HANDSOFF_SOURCES:
                raise ConfigError(f"data.source={source} feeds pipeline=hilander only; pipeline={self.pipeline} takes "
                                  "data.source=procedural (the default) or folders")  # fmt: skip
            if source == "folders" and not (d.folder("images") and d.folder("labeled")):
                raise ConfigError(f"data.source=folders for pipeline={self.pipeline} needs data.images=DIR (unlabeled "
                                  "images) and data.labeled=DIR (<= 50 labeled: images/ + masks/), or data.root=DIR "
                                  "holding images/ and labeled/")  # fmt: skip


def _copy_categories(src: Path, dst: Path, categories: list[int]) -> Path:
    import shutil

    for c in categories:
        s = src / f"{c:02d}"
        if s.is_dir() and not (dst / f"{c:02d}").is_dir():
            shutil.copytree(s, dst / f"{c:02d}")
    return dst


def _procedural_data(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.procedural import make_shapes_dataset

    d: ShapesDataConfig = ctx.cfg.shapes
    if d.n_labeled > 50:
        raise ConfigError(f"shapes.n_labeled={d.n_labeled}: HandsOff is built for at most 50 labeled images")
    if set(d.meta_categories) & set(d.pool_categories):
        raise ConfigError(
            "shapes.meta_categories and shapes.pool_categories must be disjoint (the pool holds unseen ones)"
        )
    pool = make_shapes_dataset(ctx.dir / "pool", d.n_pool, size=d.size, seed=d.seed)
    labeled = make_shapes_dataset(ctx.dir / "labeled", d.n_labeled, size=d.size, seed=d.seed + 1)
    test = make_shapes_dataset(ctx.dir / "test", d.n_test, size=d.size, seed=d.seed + 2)
    # The feature encoder and the GNN meta-train on different renderings of the meta categories: embeddings of images
    # the encoder never saw are as noisy as the pool's (see DataConfig.gnn_fraction).
    enc = make_shapes_dataset(ctx.dir / "meta_encoder", d.n_pool, size=d.size, seed=d.seed + 3)
    gnn = make_shapes_dataset(ctx.dir / "meta_gnn", d.n_pool, size=d.size, seed=d.seed + 4)
    train_dir = _copy_categories(enc / "unlabeled", ctx.dir / "encoder_train", list(d.meta_categories))
    meta_dir = _copy_categories(gnn / "unlabeled", ctx.dir / "gnn_train", list(d.meta_categories))
    pool_dir = _copy_categories(pool / "unlabeled", ctx.dir / "pool_unseen", list(d.pool_categories))
    return {"outputs": {"images": pool / "images", "labeled": labeled, "test": test, "train_dir": train_dir,
                        "meta_dir": meta_dir, "pool_dir": pool_dir},
            "metrics": {"pool_images": d.n_pool, "labeled_images": d.n_labeled, "test_images": d.n_test}}  # fmt: skip


_LABEL_KIND = {"segmentation": "masks", "keypoints": "keypoints.csv", "depth": "depth"}


@dataclass
class _LabeledSelection:
    """The labeled images a folders-source run uses: ``stems`` of ``images`` (a folder) and their labels."""

    key: str  # "labeled" | "test" (the data.* key, for messages)
    root: Path  # the folder the user gave
    images: Path
    labels: Path  # masks folder, depth folder or keypoints.csv
    task: str
    stems: list[str]
    files: dict[str, Path]  # stem -> image file
    total: int  # labeled images in the folder before selection
    separate_masks: bool

    @property
    def needs_copy(self) -> bool:
        return self.separate_masks or len(self.stems) < self.total

    def materialize(self, dst: Path) -> Path:
        """Write the selection as a standard labeled folder ``dst/images`` + ``dst/<labels>``; returns ``dst``."""
        import shutil

        (dst / "images").mkdir(parents=True, exist_ok=True)
        for s in self.stems:
            shutil.copy2(self.files[s], dst / "images" / self.files[s].name)
        if self.task == "keypoints":
            import csv

            with open(self.labels, newline="") as f:
                rows = list(csv.reader(f))
            keep = [r for r in rows[1:] if r and Path(r[0].strip()).stem in set(self.stems)]
            with open(dst / "keypoints.csv", "w", newline="") as f:
                csv.writer(f).writerows([rows[0], *keep])
        else:
            out = dst / _LABEL_KIND[self.task]
            out.mkdir(exist_ok=True)
            by_stem = {p.stem: p for p in self.labels.iterdir() if p.is_file()}
            for s in self.stems:
                shutil.copy2(by_stem[s], out / by_stem[s].name)
        return dst


def _label_stems(labels: Path, task: str) -> set[str]:
    from autolabel.data.images import IMAGE_EXTENSIONS

    if task == "keypoints":
        import csv

        with open(labels, newline="") as f:
            return {Path(r[0].strip()).stem for r in list(csv.reader(f))[1:] if r}
    exts = IMAGE_EXTENSIONS if task == "segmentation" else (".npy", ".png")
    return {p.stem for p in labels.iterdir() if p.is_file() and p.suffix.lower() in exts}


def _select_labeled(key: str, folder: str, masks: Optional[str], task: str, limit: int = -1,
                    exclude: Sequence[str] = ()) -> _LabeledSelection:  # fmt: skip
    """Check a user's labeled folder (``data.labeled`` / ``data.test``) and pick the images to use."""
    from autolabel.data.images import IMAGE_EXTENSIONS

    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"data.{key}={folder}: folder not found -- give a labeled folder (images/ + masks/, "
                        "keypoints.csv or depth/)")  # fmt: skip
    if masks:
        labels = Path(masks).expanduser().resolve()
        if task != "segmentation":
            raise ConfigError(f"data.{key}_masks is set but labels.model.task={task}: masks are segmentation labels; "
                              f"set labels.model.task=segmentation or clear data.{key}_masks")  # fmt: skip
        if not labels.is_dir():
            raise DataError(f"data.{key}_masks={masks}: folder not found -- give the folder of masks (same stems)")
        images = root
    else:
        images, labels = root / "images", root / _LABEL_KIND[task]
        if not images.is_dir():
            raise DataError(f"data.{key}={folder} has no images/ folder: a labeled folder holds images/ plus masks/ "
                            f"(or keypoints.csv, depth/); masks kept elsewhere: set data.{key}_masks=DIR")  # fmt: skip
        if not labels.exists():
            raise DataError(f"data.{key}={folder} has no {_LABEL_KIND[task]} for labels.model.task={task}: add it "
                            "(same file stems as images/) or set labels.model.task to the labels it holds")  # fmt: skip
    files = {p.stem: p for p in sorted(images.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    if not files:
        raise DataError(f"data.{key}: no images in {images} (accepted: {', '.join(IMAGE_EXTENSIONS)})")
    have = _label_stems(labels, task)
    missing = [s for s in files if s not in have]
    if missing:
        raise DataError(f"data.{key}: {len(missing)} image(s) in {images} have no label in {labels}, e.g. "
                        f"{', '.join(missing[:3])}: add them (same stem) or remove those images")  # fmt: skip
    stems = [s for s in sorted(files) if s not in set(exclude)]
    total = len(stems)
    if limit > 0:
        stems = stems[:limit]
    if not stems:
        raise DataError(f"data.{key}={folder}: no images left once the labeled ones are left out; give a separate "
                        f"data.{key} folder")  # fmt: skip
    return _LabeledSelection(key, root, images, labels, task, stems, files, total, bool(masks))


def _image_folder(key: str, folder: str) -> list[Path]:
    """The images of ``data.<key>``; a missing or empty folder is an error naming that key."""
    from autolabel.data.images import list_images

    try:
        return list_images(Path(folder).expanduser())
    except DataError as e:
        raise DataError(f"data.{key}={folder}: {e}") from e


def _class_folders(key: str, folder: str) -> Path:
    root = Path(folder).expanduser().resolve()
    _image_folder(key, folder)  # exists and holds images
    classes = [p for p in root.iterdir() if p.is_dir()]
    if len(classes) < 2:
        raise DataError(f"data.{key}={folder} has {len(classes)} class subfolder(s): Hi-LANDER meta-trains on at "
                        "least 2 labeled classes, one subfolder each (DIR/<class>/<image>)")  # fmt: skip
    return root


def _handsoff_selections(cfg: PipelineConfig) -> tuple[_LabeledSelection, Optional[_LabeledSelection]]:
    d, task = cfg.data, cfg.labels.model.task
    labeled = _select_labeled("labeled", d.folder("labeled"), d.labeled_masks, task, d.n_labeled)  # type: ignore[arg-type]
    if len(labeled.stems) > MAX_LABELED:
        raise DataError(f"data.labeled={d.folder('labeled')} holds {len(labeled.stems)} labeled images; HandsOff is "
                        f"built for <= {MAX_LABELED}: set data.n_labeled=16 (the first 16 by name) or give a smaller "
                        "folder")  # fmt: skip
    test_dir, test = d.folder("test", optional=True), None
    if test_dir:
        probe = Path(test_dir).expanduser().resolve()
        same = (probe if d.test_masks else probe / "images") == labeled.images
        test = _select_labeled("test", test_dir, d.test_masks, task, exclude=labeled.stems if same else ())
    return labeled, test


def validate_handsoff_data(cfg: PipelineConfig, with_hilander: bool) -> None:
    """Fail before any work when a folders-source run lacks a folder or its folders do not hold what it needs."""
    d = cfg.data
    if d.source_for(handsoff=True) != "folders":
        return
    _image_folder("images", d.folder("images"))  # type: ignore[arg-type]
    _handsoff_selections(cfg)
    if with_hilander:
        train = d.folder("train_dir", optional=True)
        if not train:
            raise ConfigError("pipeline=handsoff_then_hilander meta-trains Hi-LANDER on labeled classes: set "
                              "data.train_dir=DIR (one subfolder per class; or DIR/train under data.root), or run "
                              "pipeline=handsoff")  # fmt: skip
        _class_folders("train_dir", train)
        pool = d.folder("pool_dir", optional=True)
        if pool:
            _image_folder("pool_dir", pool)


def validate_hilander_data(cfg: PipelineConfig) -> None:
    d = cfg.data
    source = d.source_for(handsoff=False)
    if source == "folders":
        _class_folders("train_dir", d.folder("train_dir"))  # type: ignore[arg-type]
        _image_folder("pool_dir", d.folder("pool_dir"))  # type: ignore[arg-type]
    elif source == "features":
        for key in ("train_features", "pool_features"):
            if not Path(getattr(d, key)).is_file():
                raise DataError(f"data.{key}={getattr(d, key)}: file not found -- give an .npz/.npy feature pool")


def _folders_data(ctx: StageContext) -> dict[str, Any]:
    d: DataConfig = ctx.cfg.data
    labeled, test = _handsoff_selections(ctx.cfg)
    images = Path(d.folder("images")).expanduser().resolve()  # type: ignore[arg-type]
    outputs: dict[str, Path] = {
        "images": images,
        "labeled": labeled.materialize(ctx.dir / "labeled") if labeled.needs_copy else labeled.root,
    }
    metrics: dict[str, Any] = {"pool_images": len(_image_folder("images", str(images))),
                               "labeled_images": len(labeled.stems)}  # fmt: skip
    if test is not None:
        outputs["test"] = test.materialize(ctx.dir / "test") if test.needs_copy else test.root
        metrics["test_images"] = len(test.stems)
    train = d.folder("train_dir", optional=True)
    if train:
        outputs["train_dir"] = outputs["meta_dir"] = Path(train).expanduser().resolve()
    outputs["pool_dir"] = Path(d.folder("pool_dir", optional=True) or images).expanduser().resolve()
    return {"outputs": outputs, "metrics": metrics}


def stage_handsoff_data(ctx: StageContext) -> dict[str, Any]:
    if ctx.cfg.data.source_for(handsoff=True) == "folders":
        return _folders_data(ctx)
    return _procedural_data(ctx)


def stage_gan(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.gan import train_gan

    g: GANStageConfig = ctx.cfg.gan
    if g.pretrained:
        from pipelines.stages.gan import import_gan

        return import_gan(g.pretrained, ctx.dir)
    return train_gan(ctx.input_path("data", "images"), g.kimg, g.model, g.train, ctx.cfg.trainer, ctx.dir)


def stage_encoder(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.handsoff import train_encoder

    e: EncoderStageConfig = ctx.cfg.encoder
    return train_encoder(ctx.input_path("gan", "generator"), ctx.input_path("data", "images"), e.model, e.train,
                         False, ctx.cfg.trainer, ctx.dir)  # fmt: skip


def stage_labels(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.handsoff import FitLabelsCommand, train_labels

    lab: LabelsStageConfig = ctx.cfg.labels
    cmd = FitLabelsCommand(
        generator=str(ctx.input_path("gan", "generator")), encoder=str(ctx.input_path("encoder", "checkpoint")),
        labeled=str(ctx.input_path("data", "labeled")), refine_steps=lab.refine_steps, label_generator=lab.model,
        label_train=lab.train, trainer=ctx.cfg.trainer,
    )  # fmt: skip
    return train_labels(cmd, ctx.dir, progress=ctx.cfg.progress)


def stage_synthesis(ctx: StageContext) -> dict[str, Any]:
    from autolabel.engine.rundir import global_rank
    from pipelines.stages.handsoff import SynthesizeCommand, run_synthesis, synthesis_figures

    s: SynthesisStageConfig = ctx.cfg.synthesis
    out = ctx.dir / "synthetic"
    cmd = SynthesizeCommand(checkpoint=str(ctx.input_path("labels", "checkpoint")), n=s.n, out=str(out), seed=s.seed,
                            truncation_psi=s.truncation_psi, batch_size=s.batch_size,
                            filter_fraction=s.filter_fraction, drop_least_uncertain=s.drop_least_uncertain,
                            devices=s.devices, accelerator="cpu" if ctx.cfg.trainer.accelerator == "cpu" else "auto",
                            progress=ctx.cfg.progress)  # fmt: skip
    stats = run_synthesis(cmd)  # under DDP every rank writes its shard, rank 0 merges them
    figures = synthesis_figures(out, ctx.dir) if global_rank() == 0 else []
    metrics = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and k != "rank"}
    return {"outputs": {"dataset": out}, "metrics": metrics, "figures": [str(f) for f in figures]}


def _synthetic_size(dataset: Path) -> int:
    from PIL import Image

    first = next(iter(sorted((dataset / "images").glob("*"))), None)
    if first is None:
        raise DataError(f"the synthetic dataset {dataset} holds no images: rerun with from_stage=synthesis")
    with Image.open(first) as im:
        return int(im.height)


_HEADLINE_METRIC = {"segmentation": "miou", "depth": "rmse", "keypoints": "pck@0.1"}


def stage_downstream(ctx: StageContext) -> dict[str, Any]:
    from pipelines.stages.downstream import (
        FitKeypointsCommand,
        FitSegmentationCommand,
        train_keypoints,
        train_segmentation,
    )

    d: DownstreamStageConfig = ctx.cfg.downstream
    test = ctx.inputs["data"].get("outputs", {}).get("test")
    if not test:
        return {"metrics": {"skipped": "no real labeled test folder (data.test): nothing to score the labels on"}}
    task = ctx.cfg.labels.model.task
    synthetic = ctx.input_path("synthesis", "dataset")
    procedural = ctx.cfg.data.source_for(handsoff=True) == "procedural"
    size = ctx.cfg.shapes.size if procedural else _synthetic_size(synthetic)
    results, checkpoints = {}, {}
    for name, train in (("synthetic", synthetic), ("real_few", ctx.input_path("data", "labeled"))):
        common = dict(train=str(train), test=str(test), size=size, base=d.base, depth=d.depth,
                      batch_size=d.batch_size, max_epochs=d.max_epochs, val_fraction=d.val_fraction,
                      trainer=ctx.cfg.trainer)  # fmt: skip
        sub = ctx.dir / name
        sub.mkdir(exist_ok=True)
        if task == "keypoints":
            out = train_keypoints(FitKeypointsCommand(**common), sub)  # type: ignore[arg-type]
        else:
            out = train_segmentation(FitSegmentationCommand(task=task, **common), sub)  # type: ignore[arg-type]
        results[name], checkpoints[name] = out["metrics"], out["outputs"]["checkpoint"]
    key = _HEADLINE_METRIC[task]
    metrics: dict[str, Any] = {
        "downstream": {
            k: {m: v[m] for m in (key, "pixel_acc", "nme", "train_images") if m in v} for k, v in results.items()
        }  # fmt: skip
    }
    if task == "segmentation":
        metrics.update(miou_synthetic=results["synthetic"]["miou"], miou_real_few=results["real_few"]["miou"])
    return {"outputs": {"synthetic_model": checkpoints["synthetic"]}, "metrics": metrics}


# what the handsoff data stage reads of data.* (the hilander-only keys do not invalidate a trained GAN)
HANDSOFF_DATA_KEYS = ("source", "root", "images", "labeled", "labeled_masks", "n_labeled", "test", "test_masks",
                      "train_dir", "pool_dir")  # fmt: skip

_HANDSOFF_STAGES = [
    Stage(
        "data",
        stage_handsoff_data,
        config_keys=["shapes", *(f"data.{k}" for k in HANDSOFF_DATA_KEYS), "labels.model.task"],
        description="render the procedural dataset, or check and gather your folders",
    ),  # fmt: skip
    Stage(
        "gan",
        stage_gan,
        needs=["data"],
        config_keys=["gan", "trainer.precision", "trainer.seed"],
        description="train StyleGAN2 on the unlabeled pool",
        distributed=True,
    ),  # fmt: skip
    Stage(
        "encoder",
        stage_encoder,
        needs=["data", "gan"],
        config_keys=["encoder", "trainer.precision"],
        description="train the inversion encoder (generator frozen)",
        distributed=True,
    ),  # fmt: skip
    Stage(
        "labels",
        stage_labels,
        needs=["data", "gan", "encoder"],
        config_keys=["labels"],
        description="invert the labeled images, train the label generator on hypercolumns",
        distributed=True,
    ),  # fmt: skip
    Stage(
        "synthesis",
        stage_synthesis,
        needs=["labels"],
        config_keys=["synthesis"],
        description="synthesize labeled images, filter by uncertainty",
        distributed=True,  # distributed prediction: each DDP rank synthesizes its shard (run_synthesis)
    ),  # fmt: skip
    Stage(
        "downstream",
        stage_downstream,
        needs=["data", "synthesis"],
        config_keys=["downstream"],
        description="train a downstream net on synthetic vs few real labels, score on real test images",
        distributed=True,
    ),  # fmt: skip
]

HANDSOFF = Pipeline("handsoff", list(_HANDSOFF_STAGES), description="generate labeled images from a GAN + few labels",
                    validate=lambda cfg: validate_handsoff_data(cfg, with_hilander=False))  # fmt: skip
HANDSOFF_THEN_HILANDER = Pipeline(
    "handsoff_then_hilander",
    [*_HANDSOFF_STAGES, *HILANDER.stages[1:]],
    description="synthesize labeled data, then cluster an unlabeled pool into unseen categories",
    validate=lambda cfg: validate_handsoff_data(cfg, with_hilander=True),
)
PIPELINES.update({"handsoff": HANDSOFF, "handsoff_then_hilander": HANDSOFF_THEN_HILANDER})
