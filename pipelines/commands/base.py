"""What a command is, how its words become a validated config, and the one way a training command runs.

A command is a config schema (a dataclass) plus a function ``fn(cfg, invocation)``. The CLI owns the registry (an
explicit table in :mod:`pipelines.cli`) and hands every command the :class:`Invocation`: the words it was called
with (recorded in ``command.txt``) and the registry itself (the sweep resolves its jobs' command lines with it).
A training command is a one-stage pipeline: :func:`run_stage` runs it through :func:`pipelines.runner.run_pipeline`,
with the same config hashes, resume and rank barriers as ``autolabel run``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.errors import ConfigError

# Keys that steer *how* a command runs, not *what* it computes: they do not change a run's identity, so rerunning
# with e.g. from_stage=X or without a progress bar reopens the same run directory.
CONTROL_KEYS = (
    "from_stage",
    "until_stage",
    "progress",
    "run.resume",
    "run.dir",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
)


@dataclass(frozen=True)
class Command:
    name: str  # "cluster", or "fit hilander" for a fit target
    help: str
    schema: type
    fn: Callable[[Any, Invocation], Any]
    defaults_yaml: str | None = None  # a YAML under configs/ merged before user overrides
    positional: tuple[str, ...] = ()  # bare words fill these keys in order (`autolabel report RUN_DIR`)
    passthrough: bool = False  # key=value words after the positionals go to the schema's `overrides` list


@dataclass(frozen=True)
class Invocation:
    """How a command was called: its words (``["autolabel", ...]``) and the CLI's command registry."""

    argv: list[str]
    commands: Mapping[str, Command] = field(default_factory=dict)


def find_command(words: Sequence[str], cmds: Mapping[str, Command]) -> tuple[Command, list[str]]:
    """Pick the command from the leading words (``fit hilander`` before ``fit``); the rest are overrides."""
    words = list(words)
    if len(words) >= 2 and f"{words[0]} {words[1]}" in cmds:
        return cmds[f"{words[0]} {words[1]}"], words[2:]
    if words and words[0] in cmds:
        return cmds[words[0]], words[1:]
    import difflib

    head = " ".join(words[:2]) if words and words[0] == "fit" else (words[0] if words else "")
    targets = [n for n in cmds if n.startswith("fit ")] if words and words[0] == "fit" else list(cmds)
    near = difflib.get_close_matches(head, targets, n=1, cutoff=0.4)
    hint = f"; did you mean `autolabel {near[0]}`?" if near else ""
    raise ConfigError(
        f"unknown command `autolabel {head}`{hint} (`autolabel --help` lists them: {', '.join(sorted(targets))})"
    )


_KV = re.compile(r"^[A-Za-z_][\w.\-]*=")


def bind_positionals(cmd: Command, words: Sequence[str]) -> tuple[list[str], dict]:
    """Split words into ``key=value`` overrides and direct values: leading bare words fill the command's positional
    keys; with ``passthrough``, ``key=value`` words after them become the ``overrides`` list."""
    out: list[str] = []
    values: dict = {}
    pos = list(cmd.positional)
    extra: list[str] = []
    for w in words:
        is_kv = _KV.match(w) is not None
        if pos and not is_kv:
            values[pos.pop(0)] = w
        elif cmd.passthrough and is_kv and not w.startswith("config=") and not pos:
            extra.append(w)
        elif not is_kv:
            raise ConfigError(f"unexpected argument {w!r} for `autolabel {cmd.name}`: arguments are key=value")
        else:
            out.append(w)
    if extra:
        values["overrides"] = extra
    return out, values


def defaults_path(cmd: Command) -> Path | None:
    """The command's bundled defaults YAML (under :func:`autolabel.config.configs_dir`), if it has one."""
    from autolabel.config import configs_dir

    return configs_dir() / cmd.defaults_yaml if cmd.defaults_yaml else None


def load_command_config(cmd: Command, words: Sequence[str]) -> Any:
    """The command's validated config (an OmegaConf node) from its schema, defaults YAML and ``words``."""
    from autolabel.config import load_config

    rest, values = bind_positionals(cmd, words)
    yaml = defaults_path(cmd)
    return load_config(cmd.schema, yaml_files=[yaml] if yaml else [], overrides=rest, values=values)


def job_trainer(words: Sequence[str], cmds: Mapping[str, Command]) -> tuple[int | None, int]:
    """``(devices per node, nodes)`` that the command line ``words`` trains with, from its resolved config (schema
    defaults, the command's YAML, ``config=`` files, overrides); devices is None for ``"auto"``/-1."""
    from omegaconf import OmegaConf

    cmd, rest = find_command(words, cmds)
    trainer = OmegaConf.select(load_command_config(cmd, rest), "trainer", default=None)
    if trainer is None:
        return 1, 1
    devices = OmegaConf.to_container(trainer, resolve=True).get("devices", 1)  # type: ignore[union-attr]
    if isinstance(devices, (list, tuple)):
        n: int | None = len(devices)
    else:
        try:
            n = int(devices)
        except (TypeError, ValueError):  # "auto"
            n = None
        if n is not None and n < 1:
            n = None
    return n, int(trainer.get("num_nodes", 1) or 1)


# ----------------------------------------------------------------------------------------------- running commands


def identity_yaml(cfg: Any) -> str:
    """The resolved config as YAML without :data:`CONTROL_KEYS` (what config.yaml holds and resume compares)."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    for key in CONTROL_KEYS:
        node = container
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return OmegaConf.to_yaml(OmegaConf.create(container))


def open_run(cfg: Any, invocation: Invocation) -> Any:
    """Open (or resume) the run directory for a command whose resolved config is ``cfg`` (with a ``run`` section)."""
    from autolabel.engine.dist import global_rank
    from autolabel.engine.rundir import open_run_dir

    run = cfg.run
    rd = open_run_dir(
        name=run.name,
        root=run.root,
        resume=run.resume,
        pinned=run.dir,
        config_yaml=identity_yaml(cfg),
        argv=list(invocation.argv),
    )
    if global_rank() == 0:
        print(f"run directory: {rd.path}")
    return rd


def run_stage(cfg: Any, invocation: Invocation, stage: Any, title: str) -> int:
    """Run one stage as a one-stage pipeline in the command's run directory: a rerun of the same command skips it when
    it finished (config hash) and resumes it from ``last.ckpt`` when it was interrupted; DDP ranks follow rank 0.
    Rank 0 then writes ``summary.json`` and prints the metrics, outputs and figures."""
    from autolabel.engine.dist import global_rank
    from autolabel.engine.io import write_json
    from pipelines.runner import Pipeline, run_pipeline

    keys = [f.name for f in dataclasses.fields(cfg) if f.name not in ("run", "progress")]
    stage = dataclasses.replace(stage, config_keys=keys)  # a command's stage depends on its whole config
    rd = open_run(cfg, invocation)
    results = run_pipeline(Pipeline(stage.name, [stage]), cfg, rd)
    if global_rank() != 0:
        return 0
    manifest = results[-1].manifest
    metrics = manifest.get("metrics", {})
    write_json(rd.path / "summary.json", metrics)
    print_metrics(title, metrics)
    for key, path in manifest.get("outputs", {}).items():
        print(f"{key}: {path}")
    for fig in manifest.get("figures", []):
        print(f"figure: {fig}")
    return 0


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
