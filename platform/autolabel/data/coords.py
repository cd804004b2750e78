"""The one pixel-coordinate convention of the project: pixel ``i`` of a row is the point ``x = i`` (its centre), and a
resize maps pixel centres onto pixel centres, as PIL's and ``F.interpolate(..., align_corners=False)``'s resizing do:
a position ``x`` on a grid of width ``a`` sits at ``x' = (x + 0.5) * b / a - 0.5`` on the same image resized to width
``b``. Keypoints, hypercolumn sampling and synthesis outputs all move between resolutions with this map, so a keypoint
stays on the content it marks whatever the resize (tested by drawing a dot and finding it again after resizing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from autolabel.errors import ConfigError

T = TypeVar("T", np.ndarray, torch.Tensor)


def rescale_xy(xy: T, src_wh: Sequence[int], dst_wh: Sequence[int]) -> T:
    """Pixel coordinates ``xy [..., 2]`` (x, y) on a ``src_wh = (width, height)`` grid mapped onto the ``dst_wh`` grid
    of the same image resized (pixel centres aligned: ``x' = (x + 0.5) * dst_w / src_w - 0.5``, likewise y). Returns a
    new array/tensor of ``xy``'s kind; float32 for numpy input."""
    (sw, sh), (dw, dh) = (int(v) for v in src_wh), (int(v) for v in dst_wh)
    if min(sw, sh, dw, dh) < 1:
        raise ConfigError(f"grid sizes {src_wh} -> {dst_wh} must be >= 1 pixel")
    if isinstance(xy, torch.Tensor):
        scale = torch.tensor([dw / sw, dh / sh], dtype=xy.dtype if xy.is_floating_point() else torch.float32,
                             device=xy.device)  # fmt: skip
        return (xy + 0.5) * scale - 0.5
    arr = np.asarray(xy, dtype=np.float32)
    return ((arr + 0.5) * np.array([dw / sw, dh / sh], dtype=np.float32) - 0.5).astype(np.float32)
