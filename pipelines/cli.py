"""``autolabel``: the command-line face of the platform.

    autolabel run [pipeline=NAME] [key=value ...]      run a pipeline in one run directory (resumable)
    autolabel fit TARGET [key=value ...]               train one component (hilander, classifier, gan, ...)
    autolabel cluster checkpoint=CKPT features=PATH out=FILE.csv
    autolabel embed checkpoint=CKPT images=DIR out=pool.npz   (or embedder=torchscript:FILE | timm:NAME weights=FILE)
    autolabel select images=DIR n=16 out=DIR             which images to label (+ a contact sheet)
    autolabel label checkpoint=LABELS.ckpt images=DIR out=DIR   label real images with a trained label generator
    autolabel export src=DIR format=coco|yolo|voc|folders out=DIR
    autolabel assign checkpoint=CKPT clusters=RUN_DIR features=NEW.npz out=FILE.csv
    autolabel COMMAND --config                         print the resolved config and exit

Every command takes ``key=value`` overrides on top of its schema defaults (and ``config=FILE.yaml``). A typo'd key
fails before any work, naming the closest valid key.

The CLI owns the command registry: :func:`commands` lists every command module explicitly (a new command goes into a
``pipelines/commands/<x>.py`` module's ``COMMANDS`` and that module into the list below). Nothing registers itself by
being imported.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipelines.commands.base import Command, Invocation, defaults_path, find_command, load_command_config


def commands() -> dict[str, Command]:
    """The registry: every ``autolabel`` command by name (``fit hilander``, ``cluster``, ...)."""
    from pipelines.commands import classifier, downstream, formats, gan, handsoff, hilander, loop, run, tools

    table: dict[str, Command] = {}
    for module in (run, gan, handsoff, loop, downstream, classifier, hilander, formats, tools):
        for cmd in module.COMMANDS:
            if cmd.name in table:
                raise RuntimeError(f"two commands are named `autolabel {cmd.name}`")
            table[cmd.name] = cmd
    return table


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
    yaml = defaults_path(cmd)
    if yaml is not None and yaml.exists():
        cfg = load_config(cmd.schema, yaml_files=[yaml])
    return f"autolabel {cmd.name}: {cmd.help}\n\nkeys (defaults):\n" + OmegaConf.to_yaml(cfg)


# Keys every command takes, for how input files are checked (set in the environment, so DDP children see them too)
INPUT_GUARDS = {"mask_check": "AUTOLABEL_MASK_CHECK", "max_image_pixels": "AUTOLABEL_MAX_IMAGE_PIXELS"}


def apply_input_guards(words: Sequence[str]) -> list[str]:
    """Take ``mask_check=fail|warn|off`` and ``max_image_pixels=N`` out of ``words`` (any command), check them and
    set them for this process and its children; the other words are returned."""
    import os

    rest = []
    for w in words:
        key, eq, value = w.partition("=")
        if not (eq and key in INPUT_GUARDS):
            rest.append(w)
            continue
        os.environ[INPUT_GUARDS[key]] = value
        if key == "mask_check":  # checked now: a bad value is a one-line error before any work
            from autolabel.data.mask_checks import resolve_mask_check

            resolve_mask_check(None)
        else:
            from autolabel.data.images import max_image_pixels

            max_image_pixels()
    return rest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from autolabel.engine.console import one_line_warnings, quiet_lightning, throttle_bars_in_logs
    from autolabel.errors import AutolabelError

    quiet_lightning()  # before torch / PyG / Lightning load: their import-time notices are not the user's progress
    one_line_warnings()
    throttle_bars_in_logs()  # a log file gets a bar's state every 30 s, not every 0.1 s

    cmds = commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(cmds))
        return 0
    try:
        cmd, rest = find_command(argv, cmds)
        if any(a in ("-h", "--help") for a in rest):
            print(_command_help(cmd))
            return 0
        rest = apply_input_guards(rest)
        show = "--config" in rest
        cfg = load_command_config(cmd, [a for a in rest if a != "--config"])
        from autolabel.config import to_object, to_yaml

        if show:
            print(to_yaml(cfg))
            return 0
        result = cmd.fn(to_object(cfg), Invocation(["autolabel", *argv], cmds))
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
