"""Commands that work on finished runs: report, sweep."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from pipelines.registry import command


@dataclass
class ReportCommand:
    run_dir: str = MISSING


@command(
    "report",
    "write report.html + PNGs for a run directory (autolabel report RUN_DIR)",
    ReportCommand,
    positional=("run_dir",),
)
def report(cfg: ReportCommand) -> int:
    from pipelines.report import build_report

    path = build_report(cfg.run_dir)
    print(f"report: {path}")
    return 0


@dataclass
class SweepCommand:
    file: str = MISSING
    overrides: list[str] = field(default_factory=list)


@command(
    "sweep",
    "expand a grid / Optuna study into runs, launch them, collect a table (autolabel sweep FILE [key=value])",
    SweepCommand,
    positional=("file",),
    passthrough=True,
)
def sweep(cfg: SweepCommand) -> int:
    from pipelines.sweep import run_sweep

    run_sweep(cfg.file, list(cfg.overrides))
    return 0
