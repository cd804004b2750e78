"""Schema of the feature encoder: a supervised classifier trained on the meta-training classes."""

from __future__ import annotations

from dataclasses import dataclass

from autolabel.errors import ConfigError


@dataclass
class ClassifierConfig:
    """Feature-encoder model + optimisation settings; training length lives in the trainer config
    (``trainer.max_steps`` / ``trainer.max_epochs``)."""

    image_size: int = 32
    channels: int = 3  # 1 for greyscale data
    width: int = 32  # channels of the first stage; stages double it
    depth: int = 3  # residual stages (each halves the resolution)
    embed_dim: int = 128
    head: str = "cosine"  # cosine (normalized softmax, good for cosine kNN) | linear
    scale: float = 16.0  # logit scale of the cosine head
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    batch_size: int = 128
    val_fraction: float = 0.1
    augment: bool = True  # random crop (pad 2); horizontal flips only with hflip
    hflip: bool = False
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.head not in ("cosine", "linear"):
            raise ConfigError(f"classifier.head={self.head!r}: use cosine or linear")
        if self.channels not in (1, 3):
            raise ConfigError(f"classifier.channels={self.channels}: use 1 (greyscale) or 3 (RGB)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"classifier.val_fraction={self.val_fraction} must be in [0, 1)")
        if self.image_size < 8 or self.depth < 1 or self.width < 1 or self.embed_dim < 2:
            raise ConfigError("classifier.image_size >= 8, depth >= 1, width >= 1 and embed_dim >= 2 are required")
        if self.lr <= 0 or self.weight_decay < 0 or self.batch_size < 1:
            raise ConfigError("classifier.lr must be > 0, weight_decay >= 0 and batch_size >= 1; fix the config values")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"classifier.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.num_workers < 0:
            raise ConfigError(f"classifier.num_workers={self.num_workers} must be >= 0")
        if self.scale <= 0:
            raise ConfigError(f"classifier.scale={self.scale} must be > 0 (cosine-head logit scale, e.g. 16)")
