"""Stage and command implementations: each module registers its CLI commands."""

from pipelines.stages import classifier, gan, handsoff, hilander, run, tools  # noqa: F401
