"""StyleGAN2: generator exposing per-block features, discriminator, training module, checkpoint import."""

from autolabel.gan.augment import AdaptiveP, DiffAugment
from autolabel.gan.checkpoints import (
    load_generator,
    load_rosinality_pt,
    load_stylegan2_ada_pkl,
    save_generator,
    to_rosinality_state_dict,
)
from autolabel.gan.losses import d_logistic_loss, g_nonsaturating_loss, path_length_penalty, r1_penalty
from autolabel.gan.stylegan2 import Discriminator, Generator, channel_schedule

__all__ = [
    "AdaptiveP",
    "DiffAugment",
    "Discriminator",
    "Generator",
    "channel_schedule",
    "d_logistic_loss",
    "g_nonsaturating_loss",
    "load_generator",
    "load_rosinality_pt",
    "load_stylegan2_ada_pkl",
    "path_length_penalty",
    "r1_penalty",
    "save_generator",
    "to_rosinality_state_dict",
]


def __getattr__(name: str):
    # Lightning wrappers are imported lazily so `import autolabel.gan` stays light.
    if name in ("GANModule", "GANDataModule"):
        from autolabel.gan import stylegan2_module

        return getattr(stylegan2_module, name)
    raise AttributeError(name)
