"""Schemas shared by every training stage (the Lightning trainer, the run directory) and :func:`as_config`, the one
way a LightningModule reads its config dataclasses."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

from autolabel.errors import ConfigError

T = TypeVar("T")


def as_config(value: Any, cls: type[T], flat: Mapping[str, Any] | None = None) -> T:
    """``value`` as a ``cls`` dataclass: ``None`` -> the defaults, an instance as is, a mapping (a checkpoint's saved
    hparams, an OmegaConf node) -> ``cls(**value)`` with nested config dataclasses rebuilt from their dicts.

    Every LightningModule takes its config dataclasses through this, so ``Module(cfg)`` and
    ``Module.load_from_checkpoint`` (which passes back the saved ``asdict`` form) build the same module. ``flat``: the
    module's leftover keyword arguments, i.e. the flat hyper-parameters of a checkpoint saved before its config
    dataclass existed; they stand in for ``value`` and may not come with it."""
    if flat:
        if value is not None:
            raise ConfigError(f"got a {cls.__name__} and also {sorted(flat)}: set those in the {cls.__name__}")
        value = flat
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # another schema with the same fields
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        from omegaconf import DictConfig, OmegaConf

        if not isinstance(value, DictConfig):
            raise ConfigError(f"expected a {cls.__name__} or a dict of its fields, got {type(value).__name__}")
        value = OmegaConf.to_container(value, resolve=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; its fields: {', '.join(fields)}")
    kwargs = dict(value)
    for name, v in kwargs.items():
        factory = fields[name].default_factory
        if isinstance(v, Mapping) and isinstance(factory, type) and dataclasses.is_dataclass(factory):
            kwargs[name] = as_config(v, factory)
    return cls(**kwargs)


_PRECISIONS = {"32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine"}


@dataclass
class TrainerConfig:
    """Everything `pl.Trainer` needs to place a job: hardware, precision, length, logging cadence."""

    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps
    devices: Any = 1  # int, "auto", or a list of device ids
    strategy: str = "auto"  # auto | ddp | ddp_spawn | ddp_find_unused_parameters_true | fsdp ...
    num_nodes: int = 1
    precision: str = "32-true"
    max_steps: int = -1
    max_epochs: Optional[int] = None
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = None
    deterministic: bool = False
    enable_progress_bar: bool = True
    check_val_every_n_epoch: int = 1
    # 0: rewrite last.ckpt at the end of every epoch (resume then reproduces an uninterrupted run exactly); N > 0:
    # every N steps instead (for very long epochs; a mid-epoch resume does not replay that epoch's batch order exactly)
    checkpoint_every_n_steps: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if str(self.precision) not in _PRECISIONS:
            raise ConfigError(
                f"trainer.precision={self.precision!r} is not a Lightning precision; use one of {sorted(_PRECISIONS)}"
            )
        if self.num_nodes < 1:
            raise ConfigError(f"trainer.num_nodes={self.num_nodes} must be >= 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"trainer.max_steps={self.max_steps} would train nothing; use -1 for 'no step limit' "
                              "or a positive count")  # fmt: skip
        if self.max_epochs is not None and (self.max_epochs == 0 or self.max_epochs < -1):
            raise ConfigError(f"trainer.max_epochs={self.max_epochs} would train nothing; use a positive count, or "
                              "-1 / null for 'no epoch limit'")  # fmt: skip
        for name in ("log_every_n_steps", "check_val_every_n_epoch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name}={getattr(self, name)} must be >= 1")
        if self.checkpoint_every_n_steps < 0:
            raise ConfigError(f"trainer.checkpoint_every_n_steps={self.checkpoint_every_n_steps} must be >= 0 "
                              "(0: at every epoch end)")  # fmt: skip
        if self.gradient_clip_val is not None and self.gradient_clip_val < 0:
            raise ConfigError(f"trainer.gradient_clip_val={self.gradient_clip_val} must be >= 0 (or null: no clipping)")
        if (
            isinstance(self.devices, int)
            and not isinstance(self.devices, bool)
            and (self.devices == 0 or self.devices < -1)
        ):
            raise ConfigError(
                f"trainer.devices={self.devices}: use a positive count, -1 / auto (all), or a list of ids"
            )


@dataclass
class RunConfig:
    """Where a run lives and whether it resumes.

    A run directory is ``<root>/<name>/<timestamp>/``; with ``resume=auto`` the newest existing run of the same name
    is continued, ``resume=never`` always starts a new one, and ``resume=PATH`` continues that run directory.
    ``dir`` pins the exact directory (used by the pipeline layer and by non-zero ranks).
    """

    name: str = "default"
    root: str = "runs"
    resume: str = "auto"
    dir: Optional[str] = None
