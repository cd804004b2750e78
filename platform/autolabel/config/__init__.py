"""Structured configs: dataclass schemas per component, YAML under ``configs/``, ``key=value`` overrides."""

from autolabel.config.core import RunConfig, TrainerConfig
from autolabel.config.loader import config_hash, configs_dir, load_config, load_yaml, merge_into, to_object, to_yaml

__all__ = [
    "RunConfig",
    "TrainerConfig",
    "config_hash",
    "configs_dir",
    "load_config",
    "load_yaml",
    "merge_into",
    "to_object",
    "to_yaml",
]
