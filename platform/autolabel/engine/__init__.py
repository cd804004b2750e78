"""Running training jobs: the trainer factory, run directories, resume and crash-safe writes.

Imports are lazy so that light users (``autolabel.engine.io``, the CLI's help) do not pay for Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunDir": "rundir",
    "git_state": "rundir",
    "global_rank": "dist",
    "open_run_dir": "rundir",
    "AtomicCheckpointIO": "trainer",
    "build_trainer": "trainer",
    "checkpoint_dir": "trainer",
    "fit": "trainer",
    "last_checkpoint": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"autolabel.engine.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'autolabel.engine' has no attribute {name!r}")
