"""Load a structured config: dataclass schema <- YAML files <- ``key=value`` overrides.

Typos and wrong types fail *before any work*, with the full key path and the closest valid name.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from autolabel.errors import AutolabelError, ConfigError

T = TypeVar("T")


def configs_dir() -> Path:
    """The bundled ``configs/`` folder (override with ``$AUTOLABEL_CONFIGS``): ``autolabel/configs`` in an installed
    wheel (package data), else the ``configs/`` next to the ``pyproject.toml`` of the source checkout."""
    env = os.environ.get("AUTOLABEL_CONFIGS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent.parent  # .../autolabel
    if (package / "configs").is_dir():
        return package / "configs"
    for parent in package.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "configs").is_dir():
            return parent / "configs"
    return package / "configs"  # not found: error messages name the expected place


def _closest(name: str, candidates: Sequence[str], parent: str = "") -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    if not match:
        return ""
    return f"; did you mean '{parent + '.' if parent else ''}{match[0]}'?"


def _node_keys(cfg: DictConfig, dotted_parent: str) -> list[str]:
    node: Any = cfg if not dotted_parent else OmegaConf.select(cfg, dotted_parent, default=None)
    if isinstance(node, DictConfig):
        return [str(k) for k in node.keys()]
    return []


def _explain(err: OmegaConfBaseException, base: DictConfig, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and key:
        parent, _, leaf = key.rpartition(".")
        keys = _node_keys(base, parent)
        where = f" under '{parent}'" if parent else ""
        valid = f" Valid keys{where}: {', '.join(sorted(keys))}." if keys and len(keys) <= 30 else ""
        return ConfigError(f"unknown config key '{key}' (from {source}){_closest(leaf, keys, parent)}{valid}")
    if isinstance(err, ValidationError):
        msg = str(err).splitlines()[0]
        expected = ""
        try:
            ref = OmegaConf.select(base, key, default=None) if key else None
            if ref is not None:
                expected = f"; expected a value like {ref!r} ({type(ref).__name__})"
        except OmegaConfBaseException:
            pass
        return ConfigError(f"bad value for '{key}' (from {source}): {msg}{expected}")
    if isinstance(err, MissingMandatoryValue):
        return ConfigError(f"required config key '{key}' is not set: pass {key}=VALUE on the command line or in a YAML")
    return ConfigError(f"config error at '{key}' (from {source}): {str(err).splitlines()[0]}")


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """``["a.b=1", "c=[1,2]"]`` -> DictConfig; a token without ``=`` is an error that shows the expected form."""
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value (e.g. trainer.devices=2)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {str(e).splitlines()[0]}") from e


def yaml_error_message(path: str | os.PathLike, err: BaseException) -> str:
    """One line for a YAML that does not parse: file, line and column (1-based), the problem, and the fix."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    tab = False
    if mark is not None:
        try:
            line = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[mark.line]
            tab = "\t" in line[: mark.column + 1]
        except (OSError, IndexError):
            pass
    hint = ("YAML indents with spaces, never tabs: replace the tab with spaces" if tab
            else "fix the syntax there (check indentation, a missing ':' or an unclosed quote/bracket)")  # fmt: skip
    if isinstance(err, UnicodeDecodeError):
        where, problem, hint = "", "not UTF-8 text", "save it as UTF-8 YAML"
    return f"cannot parse YAML {path}{where}: {problem.strip()} -- {hint}"


def load_yaml(path: str | os.PathLike) -> DictConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file not found: {p} -- give an existing YAML path (bundled ones are in {configs_dir()})"
        )
    try:
        cfg = OmegaConf.load(p)
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(yaml_error_message(p, e)) from None
    if isinstance(cfg, ListConfig):
        raise ConfigError(f"{p} holds a list at top level; a config file must be a mapping of key: value")
    return cfg


def merge_into(base: DictConfig, other: DictConfig | dict, source: str) -> DictConfig:
    """Merge ``other`` into the structured ``base``; unknown keys and wrong types raise :class:`ConfigError`."""
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _explain(e, base, source) from e


def load_config(
    schema: type[T],
    *,
    yaml_files: Sequence[str | os.PathLike] = (),
    overrides: Sequence[str] = (),
    values: dict | None = None,
) -> DictConfig:
    """Build a validated config: ``schema`` defaults, then each YAML, then overrides (last wins).

    ``values`` (a plain dict, e.g. positional CLI arguments) is merged before the overrides.
    ``config=PATH`` inside ``overrides`` adds that YAML before the other overrides. The result is a structured
    ``DictConfig`` (type-checked on assignment); :func:`to_object` turns it into the dataclass instance and runs each
    schema's ``__post_init__`` value checks.
    """
    cfg: DictConfig = OmegaConf.structured(schema)
    files = list(yaml_files)
    rest = []
    for o in overrides:
        if o.startswith("config="):
            files.append(o.split("=", 1)[1])
        else:
            rest.append(o)
    for f in files:
        cfg = merge_into(cfg, load_yaml(f), str(f))
    if values:
        cfg = merge_into(cfg, OmegaConf.create(values), "command line")
    if rest:
        cfg = merge_into(cfg, parse_overrides(rest), "command line")
    to_object(cfg)  # fail fast on missing values and __post_init__ checks
    return cfg


def to_object(cfg: DictConfig) -> Any:
    """The dataclass instance behind ``cfg`` (runs ``__post_init__`` validation)."""
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        raise _explain(e, cfg, "config") from e
    except OmegaConfBaseException as e:
        raise _explain(e, cfg, "config") from e
    except AutolabelError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid config: {e}") from e


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def config_hash(cfg: DictConfig | dict, ignore: Sequence[str] = ()) -> str:
    """A short stable hash of the resolved config (keys in ``ignore``, dotted, are left out)."""
    import hashlib
    import json

    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for key in ignore:
        parts = key.split(".")
        node = container
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
