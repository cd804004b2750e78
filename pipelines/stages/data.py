"""The data stages: where a pipeline's images come from, checked before any work.

``handsoff_data`` renders the bundled procedural dataset or checks and gathers your folders (``data.source=folders``);
``data`` (the hilander pipeline) splits a bundled dataset by class, exports it as class folders, or passes your
folders / feature pools on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from autolabel.data.layout import MAX_LABELED
from autolabel.errors import ConfigError, DataError
from pipelines.runner import Stage, StageContext

SOURCES = ("procedural", "digits", "fashion_mnist", "folders", "features")
HANDSOFF_SOURCES = ("procedural", "folders")
HILANDER_SOURCES = ("digits", "fashion_mnist", "folders", "features")
# data.root=DIR (source folders): the conventional layout of a dataset folder, key -> subfolder
ROOT_LAYOUT = {"images": "images", "labeled": "labeled", "test": "test", "train_dir": "train", "pool_dir": "pool"}


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
            raise ConfigError(
                "data.source=features needs data.train_features=TRAIN.npz (with labels) and "
                "data.pool_features=POOL.npz: bring your own embeddings, the encoder stages are skipped"
            )
        if not 0.0 <= self.gnn_fraction < 1.0:
            raise ConfigError(f"data.gnn_fraction={self.gnn_fraction} must be in [0, 1)")
        if self.n_labeled == 0 or self.n_labeled < -1 or self.n_labeled > MAX_LABELED:
            raise ConfigError(
                f"data.n_labeled={self.n_labeled}: use 1..{MAX_LABELED} (HandsOff needs few labels) "
                "or -1 for all of data.labeled"
            )
        if self.per_class == 0 or self.per_class < -1:
            raise ConfigError(f"data.per_class={self.per_class}: use a cap >= 1 images per class, or -1 for all")
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

    def __post_init__(self) -> None:
        if self.n_labeled > MAX_LABELED:
            raise ConfigError(
                f"shapes.n_labeled={self.n_labeled}: HandsOff is built for at most {MAX_LABELED} labeled images"
            )
        for key in ("size", "n_pool", "n_labeled", "n_test"):
            if getattr(self, key) < 1:
                raise ConfigError(f"shapes.{key}={getattr(self, key)} must be >= 1")
        if set(self.meta_categories) & set(self.pool_categories):
            raise ConfigError(
                "shapes.meta_categories and shapes.pool_categories must be disjoint (the pool holds unseen ones)"
            )


# ------------------------------------------------------------------------------------------------- hilander data


def stage_data(ctx: StageContext) -> dict[str, Any]:
    import numpy as np

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
            raise ConfigError(
                f"data.train_features has {train.dim}-d features but data.pool_features {pool.dim}-d: "
                "embed both with the same encoder"
            )
        outputs = {"train_features": Path(d.train_features), "pool_features": Path(d.pool_features)}  # type: ignore[arg-type]
        return {"outputs": outputs, "metrics": {"meta_images": train.n, "pool_images": pool.n}}
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
    progress = ctx.cfg.progress
    train_dir = export_class_folders(x_a[~gnn], y_a[~gnn], ctx.dir / "train", class_names=names, progress=progress)
    meta_dir = train_dir
    if gnn.any():
        meta_dir = export_class_folders(x_a[gnn], y_a[gnn], ctx.dir / "meta", class_names=names, progress=progress)
    pool_dir = export_class_folders(x_b, y_b, ctx.dir / "pool", class_names=names, progress=progress)
    return {
        "outputs": {"train_dir": train_dir, "meta_dir": meta_dir, "pool_dir": pool_dir},
        "metrics": {"encoder_images": int((~gnn).sum()), "meta_images": int(gnn.sum()), "pool_images": len(x_b)},
    }


def validate_hilander_data(cfg: Any) -> None:
    """Fail before any work when the hilander pipeline's folders or feature pools are missing."""
    from autolabel.data.layout import class_folders, image_folder

    d = cfg.data
    source = d.source_for(handsoff=False)
    if source == "folders":
        class_folders("train_dir", d.folder("train_dir"))  # type: ignore[arg-type]
        image_folder("pool_dir", d.folder("pool_dir"))  # type: ignore[arg-type]
    elif source == "features":
        for key in ("train_features", "pool_features"):
            if not Path(getattr(d, key)).is_file():
                raise DataError(f"data.{key}={getattr(d, key)}: file not found -- give an .npz/.npy feature pool")


# ------------------------------------------------------------------------------------------------- handsoff data


def handsoff_selections(cfg: Any) -> tuple[Any, Any]:
    """The labeled selection (``data.labeled``) and the test selection (``data.test``, None without one)."""
    from autolabel.data.layout import select_labeled

    d, task = cfg.data, cfg.labels.model.task
    labeled = select_labeled("labeled", d.folder("labeled"), d.labeled_masks, task, d.n_labeled)  # type: ignore[arg-type]
    if len(labeled.stems) > MAX_LABELED:
        raise DataError(
            f"data.labeled={d.folder('labeled')} holds {len(labeled.stems)} labeled images; HandsOff is built for "
            f"<= {MAX_LABELED}: set data.n_labeled=16 (the first 16 by name) or give a smaller folder"
        )
    test_dir, test = d.folder("test", optional=True), None
    if test_dir:
        probe = Path(test_dir).expanduser().resolve()
        # the same dataset as data.labeled (also a COCO / VOC / YOLO one): leave its labeled images out of the test set
        same = (probe if d.test_masks else probe / "images") == labeled.images or probe == labeled.root
        test = select_labeled("test", test_dir, d.test_masks, task, exclude=labeled.stems if same else ())
    return labeled, test


def validate_handsoff_data(cfg: Any, with_hilander: bool) -> None:
    """Fail before any work when a folders-source run lacks a folder or its folders do not hold what it needs."""
    from autolabel.data.layout import class_folders, image_folder

    d = cfg.data
    if d.source_for(handsoff=True) != "folders":
        return
    image_folder("images", d.folder("images"))  # type: ignore[arg-type]
    handsoff_selections(cfg)
    if with_hilander:
        train = d.folder("train_dir", optional=True)
        if not train:
            raise ConfigError(
                "pipeline=handsoff_then_hilander meta-trains Hi-LANDER on labeled classes: set data.train_dir=DIR "
                "(one subfolder per class; or DIR/train under data.root), or run pipeline=handsoff"
            )
        class_folders("train_dir", train)
        pool = d.folder("pool_dir", optional=True)
        if pool:
            image_folder("pool_dir", pool)


def _folders_data(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.layout import image_folder

    d: DataConfig = ctx.cfg.data
    labeled, test = handsoff_selections(ctx.cfg)
    images = Path(d.folder("images")).expanduser().resolve()  # type: ignore[arg-type]
    outputs: dict[str, Path] = {
        "images": images,
        "labeled": labeled.materialize(ctx.dir / "labeled") if labeled.needs_copy else labeled.root,
    }
    metrics: dict[str, Any] = {
        "pool_images": len(image_folder("images", str(images))),
        "labeled_images": len(labeled.stems),
    }
    if test is not None:
        outputs["test"] = test.materialize(ctx.dir / "test") if test.needs_copy else test.root
        metrics["test_images"] = len(test.stems)
    train = d.folder("train_dir", optional=True)
    if train:
        outputs["train_dir"] = outputs["meta_dir"] = Path(train).expanduser().resolve()
    outputs["pool_dir"] = Path(d.folder("pool_dir", optional=True) or images).expanduser().resolve()
    return {"outputs": outputs, "metrics": metrics}


def _procedural_data(ctx: StageContext) -> dict[str, Any]:
    from autolabel.data.layout import copy_categories
    from autolabel.data.procedural import make_shapes_dataset

    d: ShapesDataConfig = ctx.cfg.shapes
    pool = make_shapes_dataset(ctx.dir / "pool", d.n_pool, size=d.size, seed=d.seed)
    labeled = make_shapes_dataset(ctx.dir / "labeled", d.n_labeled, size=d.size, seed=d.seed + 1)
    test = make_shapes_dataset(ctx.dir / "test", d.n_test, size=d.size, seed=d.seed + 2)
    # The feature encoder and the GNN meta-train on different renderings of the meta categories: embeddings of images
    # the encoder never saw are as noisy as the pool's (see DataConfig.gnn_fraction).
    enc = make_shapes_dataset(ctx.dir / "meta_encoder", d.n_pool, size=d.size, seed=d.seed + 3)
    gnn = make_shapes_dataset(ctx.dir / "meta_gnn", d.n_pool, size=d.size, seed=d.seed + 4)
    train_dir = copy_categories(enc / "unlabeled", ctx.dir / "encoder_train", list(d.meta_categories))
    meta_dir = copy_categories(gnn / "unlabeled", ctx.dir / "gnn_train", list(d.meta_categories))
    pool_dir = copy_categories(pool / "unlabeled", ctx.dir / "pool_unseen", list(d.pool_categories))
    outputs = {
        "images": pool / "images",
        "labeled": labeled,
        "test": test,
        "train_dir": train_dir,
        "meta_dir": meta_dir,
        "pool_dir": pool_dir,
    }
    return {
        "outputs": outputs,
        "metrics": {"pool_images": d.n_pool, "labeled_images": d.n_labeled, "test_images": d.n_test},
    }


def stage_handsoff_data(ctx: StageContext) -> dict[str, Any]:
    if ctx.cfg.data.source_for(handsoff=True) == "folders":
        return _folders_data(ctx)
    return _procedural_data(ctx)


# what the handsoff data stage reads of data.* (the hilander-only keys do not invalidate a trained GAN)
HANDSOFF_DATA_KEYS = (
    "source",
    "root",
    "images",
    "labeled",
    "labeled_masks",
    "n_labeled",
    "test",
    "test_masks",
    "train_dir",
    "pool_dir",
)

HILANDER_DATA = Stage(
    "data", stage_data, config_keys=["data"], description="prepare meta-training and pool image folders"
)
HANDSOFF_DATA = Stage(
    "data",
    stage_handsoff_data,
    config_keys=["shapes", *(f"data.{k}" for k in HANDSOFF_DATA_KEYS), "labels.model.task"],
    description="render the procedural dataset, or check and gather your folders",
)
