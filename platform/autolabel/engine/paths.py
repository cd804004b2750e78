"""Output-path guards every command runs before its work: never overwrite an input, never fill a foreign folder,
and fail in one line -- before minutes of compute -- when the output cannot be written.

* :func:`check_output_file` -- ``out=`` names a file: it must not be (or lie inside) one of the command's inputs, and
  must not be an existing directory.
* :func:`check_output_dir` -- ``out=`` names a folder the command fills: as above, plus an existing non-empty folder
  is accepted only when it is this command's own earlier output (recognized by its marker file, e.g. ``plan.json``).
* :func:`check_writable` -- the folder (or its nearest existing parent) can take a new file and its disk has room.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from autolabel.errors import ConfigError, DataError

_WHY = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted",
        errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}  # fmt: skip
MIN_FREE_BYTES = 16 * 2**20  # below this the disk is "full" for our purposes (a checkpoint or CSV will not fit)


def _resolved(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def _check_not_input(out: Path, key: str, given: str | os.PathLike,
                     inputs: Mapping[str, str | os.PathLike | None]) -> None:  # fmt: skip
    for name, inp in inputs.items():
        if inp is None or str(inp) == "":
            continue
        i = _resolved(inp)
        if out == i:
            raise ConfigError(f"{key}={given} is the input {name}={inp}: writing it would destroy the input; "
                              f"choose another {key}=")  # fmt: skip
        if i in out.parents:
            raise ConfigError(f"{key}={given} lies inside the input {name}={inp}: writing there would change the "
                              f"input; choose an {key}= outside it")  # fmt: skip


def check_writable(folder: str | os.PathLike, key: str = "out", min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Raise a one-line DataError unless a file can be created in ``folder`` (or, when it does not exist yet, in its
    nearest existing parent) and that disk has at least ``min_free_bytes`` free. Returns the folder checked."""
    target = _resolved(folder)
    probe_dir = target
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ConfigError(f"{key}: {probe_dir} is a file, so {target} cannot be created; choose another {key}=")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe_dir, prefix=".autolabel-write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        why = _WHY.get(e.errno or 0, e.strerror)
        raise DataError(
            f"cannot write to {probe_dir} ({why}): choose a writable {key}= (checked before any work)"
        ) from None
    try:
        free = shutil.disk_usage(probe_dir).free
    except OSError:
        return target
    if free < min_free_bytes:
        raise DataError(f"the disk holding {probe_dir} has only {free / 2**20:.1f} MiB free (need at least "
                        f"{min_free_bytes / 2**20:.0f} MiB): free some space or choose another {key}= "
                        "(checked before any work)")  # fmt: skip
    return target


def check_output_file(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None] | None = None, *,
                      key: str = "out", example: str = "out.csv") -> Path:  # fmt: skip
    """Validate a file output before any work; returns its resolved path. ``inputs`` maps key -> path of every input
    the command reads (files or folders)."""
    o = _resolved(out)
    _check_not_input(o, key, out, inputs or {})
    if o.is_dir():
        raise ConfigError(f"{key}={out} is a directory: give a file path, e.g. {key}={Path(out) / example}")
    check_writable(o.parent, key)
    return o


def _foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` other than hidden temporary files (atomic writes in flight)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def check_output_dir(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None] | None = None, *,
                     key: str = "out", marker: str, command: str) -> Path:  # fmt: skip
    """Validate a folder output before any work; returns its resolved path. An existing non-empty folder must hold
    ``marker`` (this command's own earlier, resumable output), else it is refused: it holds someone else's files."""
    o = _resolved(out)
    _check_not_input(o, key, out, inputs or {})
    for name, inp in (inputs or {}).items():
        if inp is not None and str(inp) != "" and o in _resolved(inp).parents:
            raise ConfigError(f"the input {name}={inp} lies inside {key}={out}: choose an {key}= folder that holds "
                              "none of the inputs")  # fmt: skip
    if o.exists() and not o.is_dir():
        raise ConfigError(f"{key}={out} is a file: give a folder (new, empty, or an earlier `{command}` output)")
    if o.is_dir() and not (o / marker).exists():
        entries = _foreign_entries(o)
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ConfigError(f"{key}={out} is a non-empty folder ({shown}) that is not an earlier `{command}` output "
                              f"(no {marker}): choose a new or empty folder so nothing in it is mixed or overwritten")  # fmt: skip
    check_writable(o, key)
    return o
