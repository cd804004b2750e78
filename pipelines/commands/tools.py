"""Commands that work on finished runs: ``autolabel report`` and ``autolabel sweep``."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from pipelines.commands.base import Command, Invocation


@dataclass
class ReportCommand:
    run_dir: str = MISSING


def report(cfg: ReportCommand, inv: Invocation) -> int:
    from pipelines.report import build_report

    path = build_report(cfg.run_dir)
    print(f"report: {path}")
    return 0


@dataclass
class SweepCommand:
    file: str = MISSING
    overrides: list[str] = field(default_factory=list)


def sweep(cfg: SweepCommand, inv: Invocation) -> int:
    from autolabel.engine.io import read_json
    from pipelines.sweep import run_sweep

    path = run_sweep(cfg.file, list(cfg.overrides), commands=inv.commands)  # jobs resolved with the CLI's registry
    best = path.parent / "best.json"  # written when the sweep finishes its best job (`finish`)
    return 1 if best.is_file() and read_json(best).get("returncode") not in (None, 0) else 0


COMMANDS = (
    Command(
        "report",
        "write report.html + PNGs for a run directory (autolabel report RUN_DIR)",
        ReportCommand,
        report,
        positional=("run_dir",),
    ),
    Command(
        "sweep",
        "expand a grid / Optuna study into runs, launch them, collect a table (autolabel sweep FILE [key=value])",
        SweepCommand,
        sweep,
        positional=("file",),
        passthrough=True,
    ),
)
