"""Stage and command implementations: each module registers its CLI commands."""

from pipelines.stages import hilander, tools  # noqa: F401
