"""User-facing errors.

Every error raised for bad user input is an :class:`AutolabelError` whose message is one line naming
the problem *and* the fix. The CLI prints these without a traceback.
"""

from __future__ import annotations


class AutolabelError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(AutolabelError):
    """A config key, value or type is wrong."""


class DataError(AutolabelError):
    """Input data is missing, malformed or inconsistent."""


class CheckpointError(AutolabelError):
    """A checkpoint is missing, corrupt or belongs to another model."""


def os_error_message(err: BaseException) -> str | None:
    """One line (problem + fix) for an OSError a user can fix -- a full, read-only or quota-limited disk, a missing
    permission, a directory where a file was expected -- or None for anything else (a real bug keeps its traceback)."""
    import errno

    if not isinstance(err, OSError):
        return None
    where = err.filename if err.filename is not None else "a file"
    fixes = {
        errno.ENOSPC: "no space left on the device: free some space (or write elsewhere) and rerun -- finished "
        "stages and checkpoints are kept",
        errno.EDQUOT: "disk quota exceeded: free some space (or write elsewhere) and rerun",
        errno.EROFS: "read-only file system: choose a writable output location (out= / run.root=)",
        errno.EACCES: "permission denied: choose a location you can write (out= / run.root=) or fix its permissions",
        errno.EPERM: "operation not permitted: choose a location you can write (out= / run.root=)",
        errno.EISDIR: "is a directory: give a file path instead",
        errno.ENOTDIR: "a path component is a file, not a folder: fix the path",
    }
    fix = fixes.get(err.errno or 0)
    return f"{where}: {fix}" if fix else None
