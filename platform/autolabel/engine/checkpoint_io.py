"""The one way the project reads a checkpoint: ``torch.load(weights_only=True)`` with a short allow-list.

A checkpoint is a pickle, and a pickle can name any Python callable to run while it is read. Every checkpoint this
project reads -- a Hi-LANDER or feature-encoder checkpoint for ``cluster``/``embed``, a label-generator checkpoint for
``synthesize``, a generator file, a ``last.ckpt`` a stage resumes from -- goes through :func:`load_checkpoint` (plain
dicts) or :func:`load_lightning_module` (a LightningModule). Both use torch's restricted unpickler, which rebuilds
only tensors, containers and primitive values plus the classes in :func:`allowed_globals`: the project's own config
dataclasses and ``argparse.Namespace`` (rosinality's ``train.py`` checkpoints). A file naming anything else is refused
before any of it runs, with one line that names the file and the offending global.

:class:`autolabel.engine.trainer.AtomicCheckpointIO` plugs the same loader into Lightning, so a stage resuming from
``last.ckpt`` is covered too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import pickle
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from autolabel.errors import AutolabelError, CheckpointError

# modules whose dataclasses (the project's config schemas) may appear in a checkpoint's hyperparameters
_CONFIG_MODULES = ("core", "classifier", "dense", "gan", "hilander", "inversion", "labelgen")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


@lru_cache(maxsize=1)
def allowed_globals() -> tuple[type, ...]:
    """The classes a checkpoint may name besides torch's defaults: the project's config dataclasses and
    ``argparse.Namespace`` (nothing that runs code when rebuilt: each is a plain attribute bag)."""
    import argparse

    out: list[type] = [argparse.Namespace]
    for name in _CONFIG_MODULES:
        try:
            mod = importlib.import_module(f"autolabel.config.{name}")
        except ImportError:  # pragma: no cover - a config module renamed by a later refactor
            continue
        for obj in vars(mod).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == mod.__name__:
                out.append(obj)
    return tuple(out)


def _hint(hint: str) -> str:
    return f" -- {hint}" if hint else ""


def check_checkpoint_file(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> Path:
    """``path`` as a Path when it is an existing, non-empty regular file; a one-line CheckpointError otherwise."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what} not found: {p}{_hint(hint)}")
    if p.is_dir():
        raise CheckpointError(f"{what} {p} is a directory, not a checkpoint file{_hint(hint)}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} {p} is empty (0 bytes): not a checkpoint{_hint(hint)}")
    return p


@contextlib.contextmanager
def _translated(p: Path | None, what: str, hint: str) -> Iterator[None]:
    """Turn whatever torch raises for a bad file into one CheckpointError line naming the file."""
    import torch

    label = f"{what} {p}" if p is not None else what
    try:
        with torch.serialization.safe_globals(list(allowed_globals())):
            yield
    except AutolabelError:
        raise
    except pickle.UnpicklingError as e:
        m = _GLOBAL.search(str(e))
        if m:
            raise CheckpointError(
                f"{label} was refused: it asks to run or build `{m.group(1)}`, which autolabel never writes into "
                f"a checkpoint (nothing from it was run); use a checkpoint you trust{_hint(hint)}"
            ) from None
        raise CheckpointError(
            f"cannot read {label}: it is not a readable torch checkpoint (not a torch file, or damaged){_hint(hint)}"
        ) from None
    except Exception as e:  # noqa: BLE001 - the restricted unpickler runs nothing; any failure means a damaged file
        first = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise CheckpointError(
            f"cannot read {label}: it is not a readable torch checkpoint (truncated or damaged: {first}){_hint(hint)}"
        ) from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, what: str = "checkpoint",
                    hint: str = "") -> Any:  # fmt: skip
    """The object stored in a torch checkpoint file, read with ``weights_only=True`` and the project allow-list."""
    import torch

    p = check_checkpoint_file(path, what, hint)
    with _translated(p, what, hint):
        return torch.load(p, map_location=map_location, weights_only=True)


def load_checkpoint_bytes(data: bytes, what: str, map_location: Any = "cpu", hint: str = "") -> Any:
    """:func:`load_checkpoint` for an in-memory file (e.g. a tensor blob inside an archive); ``what`` names it."""
    import io

    import torch

    if not data:
        raise CheckpointError(f"{what} is empty (0 bytes): not a checkpoint{_hint(hint)}")
    with _translated(None, what, hint):
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def load_lightning_module(cls: type, path: str | os.PathLike, map_location: Any = "cpu", *, what: str = "checkpoint",
                          hint: str = "", **kwargs: Any) -> Any:  # fmt: skip
    """``cls.load_from_checkpoint(path)`` through the same safe loader (``weights_only=True`` + the allow-list).

    Errors while rebuilding the module from a readable file (missing or mismatched keys) become a one-line
    CheckpointError saying the file belongs to another model.
    """
    p = check_checkpoint_file(path, what, hint)
    ckpt = load_checkpoint(p, map_location, what=what, hint=hint)  # refuses unsafe files before Lightning opens them
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        found = [str(k) for k in list(ckpt)[:5]] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{what} {p} is not a Lightning checkpoint (it holds {found}){_hint(hint)}")
    import torch

    try:  # Lightning reads the file again, also with weights_only=True and the same allow-list
        with torch.serialization.safe_globals(list(allowed_globals())):
            return cls.load_from_checkpoint(p, map_location=map_location, weights_only=True, **kwargs)
    except AutolabelError:
        raise
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{what} {p} does not fit {cls.__name__} ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:80]})"
            f"{_hint(hint)}"
        ) from None
