"""What the console shows: the run's own progress, not library banners (``AUTOLABEL_VERBOSE=1`` keeps them).

Imports nothing heavy, so the CLI can call it before torch, PyG and Lightning load. Training progress in a log file
(plain lines instead of a bar) is :mod:`autolabel.engine.progress`, which needs Lightning."""

from __future__ import annotations

import os
import sys

# Lightning's start-up banners and advice that say nothing about the user's run (set AUTOLABEL_VERBOSE=1 to keep them)
_BANNER_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                   "pytorch_lightning.trainer.connectors.checkpoint_connector",
                   "pytorch_lightning.accelerators.cuda")  # fmt: skip
_BANNER_WARNINGS = (r"The number of training batches .* is smaller than the logging interval",
                    r"Found \d+ module\(s\) in eval mode", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                    r"The '\w+_dataloader' does not have many workers", r"Checkpoint directory .* exists and is not empty",
                    r"`torch.jit.script` is deprecated",
                    r"Total length of `\w+` across ranks is zero")  # fmt: skip  # fit hilander without val_features


def quiet_lightning() -> None:
    """Drop Lightning's banners ("GPU available ...", "TPU available ...", the litlogger tip, "`Trainer.fit` stopped"),
    PyG's import-time ``torch.jit.script`` deprecation notice and Lightning's hints about our deliberate choices
    (eval-mode frozen backbones, few batches per epoch, no workers), so the console shows the run's own progress;
    errors and other warnings still show."""
    import logging
    import warnings

    if os.environ.get("AUTOLABEL_VERBOSE", "") not in ("", "0"):
        return
    for name in _BANNER_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _BANNER_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def one_line_warnings() -> None:
    """The project's own warnings (a calibration on few classes, k capped, odd mask values) as one ``warning: ...``
    line, without Python's file, line and source echo; every other warning is formatted as before. (Formatting, not
    showing, is replaced: code that records warnings still gets them.)"""
    import warnings

    fmt = warnings.formatwarning
    if getattr(fmt, "_autolabel", False):
        return

    def one_line(message, category, filename, lineno, line=None):
        if category.__module__.startswith("autolabel."):
            return f"warning: {message}\n"
        return fmt(message, category, filename, lineno, line)

    one_line._autolabel = True
    warnings.formatwarning = one_line


def interactive() -> bool:
    """Whether progress goes to a terminal (tqdm draws on stderr): bars there, plain lines in a log file."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def throttle_bars_in_logs(seconds: float = 30.0) -> None:
    """In a log file (stderr is not a terminal) a tqdm bar appends a redrawn copy of itself every 0.1 s; make every
    bar of the run redraw at most every ``seconds`` instead (tqdm reads ``TQDM_MININTERVAL``; a value the user set
    is kept). Training loops print their own lines there (:class:`autolabel.engine.progress.LogProgress`)."""
    if not interactive():
        os.environ.setdefault("TQDM_MININTERVAL", str(seconds))
