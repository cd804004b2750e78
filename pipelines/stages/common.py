"""Helpers shared by the command implementations."""

from __future__ import annotations

import sys
from typing import Any

from omegaconf import OmegaConf

from autolabel.config import RunConfig
from autolabel.engine import RunDir, open_run_dir
from autolabel.engine.rundir import global_rank
from pipelines import registry

# Keys that steer *how* a command runs, not *what* it computes: they do not change a run's identity, so rerunning
# with e.g. from_stage=X or without a progress bar reopens the same run directory.
CONTROL_KEYS = ("from_stage", "until_stage", "progress", "run.resume", "run.dir", "trainer.enable_progress_bar",
                "trainer.log_every_n_steps")  # fmt: skip


def identity_yaml(cfg: Any) -> str:
    """The resolved config as YAML without :data:`CONTROL_KEYS` (what config.yaml holds and resume compares)."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    for key in CONTROL_KEYS:
        node = container
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return OmegaConf.to_yaml(OmegaConf.create(container))


def open_run(cfg: Any, run: RunConfig) -> RunDir:
    """Open (or resume) the run directory for a command whose resolved config is ``cfg``."""
    yaml = identity_yaml(cfg)
    rd = open_run_dir(
        name=run.name,
        root=run.root,
        resume=run.resume,
        pinned=run.dir,
        config_yaml=yaml,
        argv=list(registry.INVOCATION) or ["autolabel", *sys.argv[1:]],
    )
    if global_rank() == 0:
        print(f"run directory: {rd.path}")
    from autolabel.engine.trainer import seed_all  # Lightning: imported only when a command runs

    trainer = getattr(cfg, "trainer", None)
    seed_all(getattr(trainer, "seed", 0))  # models built after this get the same weights in any process
    return rd


def finish_stage(run: RunDir, stage: Any, out: dict[str, Any], title: str) -> None:
    """Rank 0 writes the stage manifest and the run summary and prints the metrics; other DDP ranks stay quiet."""
    from autolabel.engine.io import write_json

    if global_rank() != 0:
        return
    write_json(stage / "manifest.json", {"status": "done", **out})
    write_json(run.path / "summary.json", out.get("metrics", {}))
    print_metrics(title, out.get("metrics", {}))
    for key, path in out.get("outputs", {}).items():
        print(f"{key}: {path}")
    for fig in out.get("figures", []):
        print(f"figure: {fig}")


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
