"""Stage and command implementations: each module registers its CLI commands."""

from pipelines.stages import classifier, downstream, formats, gan, handsoff, hilander, run, tools  # noqa: F401
