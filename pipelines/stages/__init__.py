"""One module per stage: its config schema, its function, its :class:`pipelines.runner.Stage` entry. No CLI code."""
