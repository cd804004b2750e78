"""The command registry behind the ``autolabel`` CLI.

A command is a config schema (a dataclass) plus a function taking the validated config. Modules register commands
with :func:`command`; the CLI imports them lazily, so ``autolabel --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_REGISTRY: dict[str, Command] = {}
INVOCATION: list[str] = []  # the words of the running `autolabel ...` command (recorded in command.txt)


@dataclass(frozen=True)
class Command:
    name: str  # "cluster", or "fit hilander" for a fit target
    help: str
    schema: type
    fn: Callable[[Any], Any]
    defaults_yaml: str | None = None  # a YAML under configs/ merged before user overrides
    positional: tuple[str, ...] = ()  # bare words fill these keys in order (`autolabel report RUN_DIR`)
    passthrough: bool = False  # key=value words after the positionals go to the schema's `overrides` list


def command(
    name: str,
    summary: str,
    schema: type,
    defaults_yaml: str | None = None,
    positional: tuple[str, ...] = (),
    passthrough: bool = False,
) -> Callable:
    def deco(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        _REGISTRY[name] = Command(name, summary, schema, fn, defaults_yaml, positional, passthrough)
        return fn

    return deco


def commands() -> dict[str, Command]:
    from pipelines import commands as _  # noqa: F401  (imports register the commands)

    return dict(_REGISTRY)
