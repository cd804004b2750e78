"""Helpers shared by the command implementations."""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import OmegaConf

from autolabel.config import RunConfig
from autolabel.engine import RunDir, open_run_dir
from pipelines import registry


def open_run(cfg: Any, run: RunConfig) -> RunDir:
    """Open (or resume) the run directory for a command whose resolved config is ``cfg``."""
    yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)
    rd = open_run_dir(
        name=run.name,
        root=run.root,
        resume=run.resume,
        pinned=run.dir,
        config_yaml=yaml,
        argv=list(registry.INVOCATION) or ["autolabel", *sys.argv[1:]],
    )
    print(f"run directory: {rd.path}")
    return rd


def print_metrics(title: str, metrics: dict[str, Any]) -> None:
    """A compact rich table of scalar metrics."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if isinstance(v, float):
            table.add_row(k, f"{v:.4f}")
        elif isinstance(v, (int, str)):
            table.add_row(k, str(v))
    Console().print(table)
