"""The ``autolabel`` commands, one module per family; :mod:`pipelines.cli` lists them in its registry."""
