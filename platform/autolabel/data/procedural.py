"""A bundled procedural dataset (no downloads, deterministic from a seed) and Gaussian feature blobs.

``make_shapes_dataset`` renders one object per image -- ellipse / rectangle / triangle / star -- in one of several
colour families, with stripe or checker texture, on a low-saturation background with a lighting gradient and noise.
It writes a labeled folder holding ALL label kinds:

- ``images/<id>.png``; ``masks/<id>.png`` (0 = background, 1..S = shape class);
- ``keypoints.csv``: K=4 object extreme points, in order top, bottom, left, right (each a mask pixel);
- ``depth/<id>.npy``: a tilted plane (depth 4..8) with the object as a dome closer to the camera;
- ``classes.csv``: ``image,category,shape,color`` with category = shape * n_colors + color;
- ``labels.json``: the mask classes' and keypoints' names (background + shapes; top, bottom, left, right);
- ``unlabeled/<category:02d>/<id>.png``: the same images in class subfolders for clustering experiments.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.engine.io import atomic_save_npy, atomic_write_bytes, atomic_write_text
from autolabel.errors import ConfigError

SHAPES = ("ellipse", "rectangle", "triangle", "star")
COLOR_HUES = (0.0, 0.33, 0.62, 0.14, 0.8)  # red, green, blue, yellow, magenta


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test on rotated, scale-normalized coordinates (object radius ~1)."""
    if shape == 0:
        return u**2 + (v / 0.65) ** 2 <= 1.0
    if shape == 1:
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.6)
    if shape == 2:
        inside = np.ones_like(u, dtype=bool)
        for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(a) + v * np.sin(a) <= 0.5
        return inside
    r = np.sqrt(u**2 + v**2)
    theta = np.arctan2(v, u)
    return r <= 0.55 + 0.45 * np.cos(5 * theta)


def render_shape(
    rng: np.random.Generator, size: int, shape: int, color: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One sample: uint8 image [H,W,3], bool mask [H,W], keypoints float [4,2] (x,y), depth float32 [H,W]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(20):
        cx, cy = rng.uniform(0.35, 0.65, 2) * size
        radius = rng.uniform(0.22, 0.34) * size
        ang = rng.uniform(0, 2 * np.pi)
        dx, dy = (xx - cx) / radius, (yy - cy) / radius
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = -dx * np.sin(ang) + dy * np.cos(ang)
        mask = _shape_mask(shape, u, v)
        if mask.sum() >= 8:
            break
    # background: low saturation colour, lighting gradient, noise
    bg = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.85))
    g = rng.normal(size=2)
    light = 1.0 + 0.25 * (g[0] * (xx / size - 0.5) + g[1] * (yy / size - 0.5))
    img = bg[None, None, :] * light[..., None]
    # object: colour family hue with jitter, stripe or checker texture
    hue = (COLOR_HUES[color % len(COLOR_HUES)] + rng.uniform(-0.03, 0.03)) % 1.0
    fg = _hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0))
    period = rng.uniform(0.3, 0.7)
    tex = np.sin(u / period * np.pi) if rng.uniform() < 0.5 else np.sin(u / period * np.pi) * np.sin(v / period * np.pi)
    obj = fg[None, None, :] * (0.85 + 0.15 * tex[..., None]) * light[..., None]
    img = np.where(mask[..., None], obj, img)
    img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
    image = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # keypoints: extreme mask pixels (top, bottom, left, right); ties broken by the median pixel
    ys, xs = np.nonzero(mask)
    kps = []
    for sel in (ys == ys.min(), ys == ys.max(), xs == xs.min(), xs == xs.max()):
        idx = np.flatnonzero(sel)
        j = idx[len(idx) // 2]
        kps.append((xs[j], ys[j]))
    keypoints = np.array(kps, dtype=np.float32)
    # depth: tilted plane + dome for the object (closer = smaller depth)
    p = rng.uniform(-1.5, 1.5, 2)
    plane = 6.0 + p[0] * (xx / size - 0.5) + p[1] * (yy / size - 0.5)
    dome = np.clip(1.0 - (u**2 + v**2), 0.0, 1.0)
    depth = np.where(mask, plane - 1.5 - 1.5 * dome, plane).astype(np.float32)
    return image, mask, keypoints, depth


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def make_shapes_dataset(
    out_dir: str | os.PathLike,
    n: int,
    size: int = 32,
    seed: int = 0,
    n_classes_shapes: int = 4,
    n_colors: int = 3,
    progress: bool = False,
) -> Path:
    """Render ``n`` images and write the labeled folder described in the module docstring; returns ``out_dir``.

    Categories = ``n_classes_shapes * n_colors`` (default 12); mask classes = ``n_classes_shapes + 1``.
    """
    if not 1 <= n_classes_shapes <= len(SHAPES):
        raise ConfigError(f"n_classes_shapes={n_classes_shapes}: use 1..{len(SHAPES)}")
    if not 1 <= n_colors <= len(COLOR_HUES):
        raise ConfigError(f"n_colors={n_colors}: use 1..{len(COLOR_HUES)}")
    if n < 1 or size < 8:
        raise ConfigError(f"n={n}, size={size}: need n >= 1 and size >= 8")
    from tqdm import tqdm

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    n_cat = n_classes_shapes * n_colors
    cats = np.arange(n) % n_cat
    rng.shuffle(cats)
    kp_lines = ["image,x0,y0,x1,y1,x2,y2,x3,y3"]
    cls_lines = ["image,category,shape,color"]
    for i in tqdm(range(n), desc="render shapes", disable=not progress):
        cat = int(cats[i])
        shape, color = cat // n_colors, cat % n_colors
        image, mask, kps, depth = render_shape(rng, size, shape, color)
        sid = f"{i:06d}"
        png = _png(image)
        atomic_write_bytes(out / "images" / f"{sid}.png", png)
        atomic_write_bytes(out / "unlabeled" / f"{cat:02d}" / f"{sid}.png", png)
        atomic_write_bytes(out / "masks" / f"{sid}.png", _png((mask * (shape + 1)).astype(np.uint8)))
        atomic_save_npy(out / "depth" / f"{sid}.npy", depth)
        kp_lines.append(f"{sid}.png," + ",".join(f"{v:.1f}" for v in kps.reshape(-1)))
        cls_lines.append(f"{sid}.png,{cat},{shape},{color}")
    atomic_write_text(out / "keypoints.csv", "\n".join(kp_lines) + "\n")
    atomic_write_text(out / "classes.csv", "\n".join(cls_lines) + "\n")
    names = {"classes": ["background", *SHAPES[:n_classes_shapes]], "keypoints": ["top", "bottom", "left", "right"],
             "skeleton": [[0, 3], [3, 1], [1, 2], [2, 0]]}  # fmt: skip
    atomic_write_text(out / "labels.json", json.dumps(names) + "\n")
    return out
