"""Imports every module that registers ``autolabel`` commands (see :mod:`pipelines.registry`)."""

from pipelines import stages  # noqa: F401
