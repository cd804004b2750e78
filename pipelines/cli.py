"""``autolabel``: the command-line face of the platform.

    autolabel run [pipeline=NAME] [key=value ...]      run a pipeline in one run directory (resumable)
    autolabel fit TARGET [key=value ...]               train one component (hilander, classifier, gan, ...)
    autolabel cluster checkpoint=CKPT features=PATH out=FILE.csv
    autolabel embed checkpoint=CKPT images=DIR out=pool.npz
    autolabel COMMAND --config                         print the resolved config and exit

Every command takes ``key=value`` overrides on top of its schema defaults (and ``config=FILE.yaml``). A typo'd key
fails before any work, naming the closest valid key.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from pipelines import registry
from pipelines.registry import Command, commands


def _usage(cmds: dict[str, Command]) -> str:
    lines = ["usage: autolabel COMMAND [TARGET] [key=value ...] [--config] [--help]", "", "commands:"]
    width = max(len(n) for n in cmds) + 2
    for name in sorted(cmds):
        lines.append(f"  {name.ljust(width)}{cmds[name].help}")
    lines += [
        "",
        "Each command takes key=value overrides (and config=FILE.yaml); `autolabel COMMAND --help` lists its keys.",
    ]
    return "\n".join(lines)


def _command_help(cmd: Command) -> str:
    from omegaconf import OmegaConf

    from autolabel.config import load_config

    cfg = OmegaConf.structured(cmd.schema)
    if cmd.defaults_yaml:
        cfg = load_config(cmd.schema, yaml_files=[_defaults_path(cmd)]) if _defaults_path(cmd).exists() else cfg
    return f"autolabel {cmd.name}: {cmd.help}\n\nkeys (defaults):\n" + OmegaConf.to_yaml(cfg)


def _defaults_path(cmd: Command):
    from autolabel.config import configs_dir

    return configs_dir() / cmd.defaults_yaml  # type: ignore[operator]


def resolve(argv: Sequence[str], cmds: dict[str, Command]) -> tuple[Command, list[str]]:
    """Pick the command from the leading words (``fit hilander`` before ``fit``); the rest are overrides."""
    from autolabel.errors import ConfigError

    words = list(argv)
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


def bind_positionals(cmd: Command, words: list[str]) -> tuple[list[str], dict]:
    """Split words into ``key=value`` overrides and direct values: leading bare words fill the command's positional
    keys; with ``passthrough``, ``key=value`` words after them become the ``overrides`` list."""
    from autolabel.errors import ConfigError

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from autolabel.errors import AutolabelError

    cmds = commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(cmds))
        return 0
    try:
        cmd, rest = resolve(argv, cmds)
        registry.INVOCATION[:] = ["autolabel", *argv]
        if any(a in ("-h", "--help") for a in rest):
            print(_command_help(cmd))
            return 0
        show = "--config" in rest
        rest, values = bind_positionals(cmd, [a for a in rest if a != "--config"])
        from autolabel.config import load_config, to_object, to_yaml

        yaml_files = [_defaults_path(cmd)] if cmd.defaults_yaml else []
        cfg = load_config(cmd.schema, yaml_files=yaml_files, overrides=rest, values=values)
        if show:
            print(to_yaml(cfg))
            return 0
        result = cmd.fn(to_object(cfg))
        return int(result) if isinstance(result, int) else 0
    except AutolabelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full / read-only disk mid-run: one line, not a traceback (bugs still raise)
        from autolabel.errors import os_error_message

        msg = os_error_message(e)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        from autolabel.engine.rundir import release_run_dir

        release_run_dir()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
