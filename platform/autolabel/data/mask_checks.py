"""Mask sanity checks for labeled folders: colour masks without a label map, and class counts that come from stray
values or grey levels instead of class indices.

``mask_check`` (``LabeledFolder(mask_check=...)``, else ``$AUTOLABEL_MASK_CHECK``, else ``fail``): ``fail`` stops with
one line naming the file and the value, ``warn`` emits :class:`MaskValueWarning`, ``off`` skips the check. The check
runs only when the class count is inferred from the masks (no ``n_classes`` given) and masks hold indices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.errors import ConfigError, DataError

MASK_CHECK_ENV = "AUTOLABEL_MASK_CHECK"
MASK_CHECKS = ("fail", "warn", "off")
# a value is "stray" when it covers under 30 pixels (the reference's per-image "too small to be a class" size) and
# under 1% of all mask pixels, or under 0.01% of them whatever the count
STRAY_MIN_PIXELS = 30
STRAY_SMALL_SHARE = 0.01
STRAY_MIN_SHARE = 1e-4


class MaskValueWarning(UserWarning):
    """A mask value that covers almost no pixels sets the class count (``mask_check=warn``)."""


def resolve_mask_check(value: str | None) -> str:
    """``value``, else ``$AUTOLABEL_MASK_CHECK``, else ``fail``; one of fail | warn | off."""
    v = (value if value is not None else os.environ.get(MASK_CHECK_ENV, "") or "fail").strip().lower()
    if v not in MASK_CHECKS:
        raise ConfigError(f"mask_check={v!r} (or {MASK_CHECK_ENV}): use fail, warn or off")
    return v


def single_channel_mask(m: Image.Image, path: Path) -> Image.Image:
    """The mask as one channel of class indices. A colour mask (RGB values that are not grey) cannot be read as
    indices without a label map, so it fails in one line; a grey mask stored as RGB is read as grey."""
    if m.mode in ("L", "P"):
        return m
    if m.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        rgb = np.asarray(m.convert("RGB"), dtype=np.int16)
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        if int(spread.max(initial=0)) > 32:
            y, x = np.unravel_index(int(spread.argmax()), spread.shape)
            raise DataError(f"{path} is a colour (RGB) mask, e.g. {tuple(int(c) for c in rgb[y, x])} at x={x} y={y}: "
                            "colour masks need a label map -- add labelmap.txt (one line per class: its colour) next "
                            "to images/, or save masks as single-channel PNGs of class indices")  # fmt: skip
    return m.convert("L")


def check_mask_values(counts: Sequence[np.ndarray], paths: Sequence[Path], policy: str = "fail") -> None:
    """Catch a class count that comes from values covering almost no pixels (a stray 200 in a 0/1 mask makes 201
    classes) or from grey levels (0/60/120 makes 121 classes). ``counts``: per mask, pixels per value (256 bins).
    ``policy`` fail raises DataError, warn emits :class:`MaskValueWarning`, off does nothing."""
    if policy == "off" or not counts:
        return
    import warnings

    total = np.sum(counts, axis=0)
    n_pix = int(total.sum())
    present = np.flatnonzero(total)
    top = int(present.max())
    if top < 1:
        return

    def is_stray(c: int) -> bool:
        return (c < STRAY_MIN_PIXELS and c < STRAY_SMALL_SHARE * n_pix) or c < STRAY_MIN_SHARE * n_pix

    solid = [int(v) for v in present if not is_stray(int(total[v]))]
    top_solid = max(solid) if solid else 0
    fix = "fix the masks, pass n_classes, or accept with the key mask_check=warn (or AUTOLABEL_MASK_CHECK=warn)"

    def file_with(v: int) -> Path:
        return next(p for p, c in zip(paths, counts) if c[v] > 0)

    msg = None
    stray = [int(v) for v in present if v > top_solid]
    if stray:
        v = stray[-1]
        msg = (f"{file_with(v)}: mask value {v} covers only {int(total[v])} of {n_pix} mask pixels but makes the "
               f"class count {top + 1} (the largest well-covered value is {top_solid}): a stray value? {fix}")  # fmt: skip
    elif top + 1 > 2 and len(present) < (top + 1) / 2:
        shown = ", ".join(str(int(v)) for v in present[:6]) + (", ..." if len(present) > 6 else "")
        msg = (f"{file_with(top)}: masks hold only {len(present)} distinct values ({shown}) but value {top} makes "
               f"{top + 1} classes: grey levels rather than class indices 0..K-1? remap them; {fix}")  # fmt: skip
    if msg is None:
        return
    if policy == "fail":
        raise DataError(msg)
    warnings.warn(msg, MaskValueWarning, stacklevel=3)
