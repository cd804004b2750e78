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


def require_file(path, what: str = "file", hint: str = "") -> None:
    """Raise :class:`DataError` if ``path`` does not exist."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        msg = f"{what} not found: {p}"
        if hint:
            msg += f" -- {hint}"
        raise DataError(msg)
