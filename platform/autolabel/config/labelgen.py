"""HandsOff label-generator, label-training and synthesis schemas (OmegaConf-structured dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field

from autolabel.errors import ConfigError


@dataclass
class LabelGeneratorConfig:
    task: str = "segmentation"  # segmentation | keypoints | depth
    n_classes: int = -1  # -1 = the labeled folder's class count (max label + 1 at full resolution)
    n_keypoints: int = 0  # 0 = the labeled folder's keypoint count; > 0 is checked against it
    n_members: int = 10
    hidden: list[int] = field(default_factory=lambda: [256, 32])
    working_resolution: int = -1  # -1 = the generator's image resolution
    layers: list[int] = field(default_factory=list)  # empty = every feature map
    fp16: bool = True
    heatmap_sigma: float = 2.0
    min_class_pixels: int = 30
    depth_loss: str = "l1"  # l1 | l2

    def __post_init__(self) -> None:
        if self.task not in ("segmentation", "keypoints", "depth"):
            raise ConfigError(f"label_generator.task={self.task!r}: use segmentation, keypoints or depth")
        if self.n_members < 1:
            raise ConfigError(f"label_generator.n_members={self.n_members} must be >= 1 (10 in the reference)")
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise ConfigError(f"label_generator.hidden={list(self.hidden)} must be two positive widths, e.g. [256, 32]")
        if self.n_classes == 0 or self.n_classes < -1 or self.n_keypoints < 0:
            raise ConfigError(f"label_generator.n_classes={self.n_classes} must be -1 (count them) or >= 2, and "
                              f"n_keypoints={self.n_keypoints} >= 0")  # fmt: skip
        if self.working_resolution == 0 or self.working_resolution < -1:
            raise ConfigError(f"label_generator.working_resolution={self.working_resolution} must be -1 (the "
                              "generator's resolution) or >= 1")  # fmt: skip
        if self.n_classes == 1:
            raise ConfigError("label_generator.n_classes=1: segmentation needs >= 2 classes (background included); "
                              "use -1 to count them in the labeled folder")  # fmt: skip
        if self.n_keypoints < 0:
            raise ConfigError(f"label_generator.n_keypoints={self.n_keypoints}: use 0 (count them in the labels) or "
                              "the keypoint count")  # fmt: skip
        if self.heatmap_sigma <= 0:
            raise ConfigError(f"label_generator.heatmap_sigma={self.heatmap_sigma} must be > 0 (2 pixels is typical)")
        if self.min_class_pixels < 0:
            raise ConfigError(
                f"label_generator.min_class_pixels={self.min_class_pixels} must be >= 0 (30 in reference)"
            )
        if self.depth_loss not in ("l1", "l2"):
            raise ConfigError(f"label_generator.depth_loss={self.depth_loss!r}: use l1 or l2")


@dataclass
class LabelTrainConfig:
    """How the label generator is trained on streamed pixels (see ``autolabel.handsoff.label_generator_module``).

    One generator forward computes the hypercolumns of ``images_per_step`` images x ``pixels_per_image`` pixels and
    feeds ``k = images_per_step * pixels_per_image // (n_members * batch_pixels)`` optimizer steps, each member taking
    its own disjoint ``batch_pixels`` minibatch (only the pixels used are computed). Length: ``max_steps`` optimizer
    steps, or with ``epochs > 0`` that many epochs over the labeled pixels (one epoch = ``ceil(N * R^2 /
    batch_pixels)`` steps: each member sees as many pixels as the N labeled images hold at working resolution R).
    With ``select_folds >= 2`` that length is an upper bound: the length is chosen on held-out labeled images
    (:mod:`autolabel.handsoff.length`).
    """

    lr: float = 1e-3
    batch_pixels: int = 64  # pixels per member per optimizer step (reference 64)
    pixels_per_image: int = 4096  # pixels computed per image per generator forward (capped at R^2)
    images_per_step: int = 1  # labeled images per generator forward
    max_steps: int = 2000  # optimizer steps (ignored when epochs > 0)
    epochs: float = 0.0  # > 0: train this many epochs over the labeled pixels instead of max_steps
    keypoint_peak_fraction: float = 0.5  # keypoints: share of pixels sampled near visible keypoints (rest uniform)
    seed: int = 0  # member initialization and the pixel stream (a function of seed and step: exact resume)
    # >= 2: choose the length on held-out labeled images (k folds; autolabel.handsoff.length), the length above is
    # the upper bound; 0: train the length above
    select_folds: int = 0
    select_every: int = 50  # optimizer steps between held-out scores of the fold ensembles
    # > 0: weight each labeled pixel by how well the inversion reproduced the photo there, exp(-e / (recon_weight *
    # median e)) with e the pixel's squared error (autolabel.handsoff.invert.reconstruction_weights): where the
    # GAN's image misses the photo, the photo's label does not fit the features the label generator sees; 0: every
    # pixel counts the same
    recon_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"label_train.lr={self.lr} must be > 0 (1e-3 in the reference)")
        for name in ("batch_pixels", "pixels_per_image", "images_per_step", "max_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"label_train.{name}={getattr(self, name)} must be >= 1")
        if self.batch_pixels < 2:
            raise ConfigError(f"label_train.batch_pixels={self.batch_pixels} must be >= 2 (BatchNorm; 64 in reference)")
        if self.epochs < 0:
            raise ConfigError(f"label_train.epochs={self.epochs} must be >= 0 (0 = train max_steps steps)")
        if not 0.0 <= self.keypoint_peak_fraction < 1.0:
            raise ConfigError(f"label_train.keypoint_peak_fraction={self.keypoint_peak_fraction} must be in [0, 1)")
        if self.select_folds == 1 or self.select_folds < 0:
            raise ConfigError(f"label_train.select_folds={self.select_folds}: use 0 (train the configured length) or "
                              ">= 2 folds of the labeled images to choose it")  # fmt: skip
        if self.recon_weight < 0:
            raise ConfigError(f"label_train.recon_weight={self.recon_weight} must be >= 0 (0: off; 1: a pixel with "
                              "the median reconstruction error weighs exp(-1))")  # fmt: skip
        if self.select_every < 1:
            raise ConfigError(f"label_train.select_every={self.select_every} must be >= 1 (steps between scores)")
