"""Pictures people would rather look at than read: image grids, label overlays, cluster galleries, training curves.

All functions write a PNG atomically and return its path. Images are uint8 ``[H, W, 3]`` / ``[H, W]`` arrays or paths.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from autolabel.engine.io import atomic_write_bytes

_PALETTE = np.array(
    [
        [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
        [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
        [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128],
    ],
    dtype=np.uint8,
)  # fmt: skip


def palette(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours; class 0 (background) is black."""
    if n <= len(_PALETTE):
        return _PALETTE[:n]
    rng = np.random.default_rng(0)
    extra = rng.integers(40, 255, size=(n - len(_PALETTE), 3), dtype=np.uint8)
    return np.concatenate([_PALETTE, extra])


def _to_rgb(img: np.ndarray | str | os.PathLike, size: int | None = None) -> np.ndarray:
    if isinstance(img, (str, os.PathLike)):
        from autolabel.data.images import image_array, open_image  # any mode, bomb-guarded

        with open_image(img) as src:
            im = Image.fromarray(image_array(src, 3))
    else:
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr).convert("RGB")
    if size is not None:
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im)


def _save_png(arr: np.ndarray, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def image_grid(
    images: Sequence[np.ndarray | str | os.PathLike],
    path: str | os.PathLike,
    *,
    ncol: int = 8,
    size: int = 64,
    pad: int = 2,
) -> Path:
    """Tile images into one PNG (``ncol`` per row, each resized to ``size``)."""
    tiles = [_to_rgb(im, size) for im in images]
    if not tiles:
        tiles = [np.zeros((size, size, 3), np.uint8)]
    ncol = max(1, min(ncol, len(tiles)))
    nrow = (len(tiles) + ncol - 1) // ncol
    canvas = np.full((nrow * (size + pad) + pad, ncol * (size + pad) + pad, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncol)
        y, x = pad + r * (size + pad), pad + c * (size + pad)
        canvas[y : y + size, x : x + size] = t
    return _save_png(canvas, path)


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, n_classes: int | None = None) -> np.ndarray:
    """Blend a class-index mask over an RGB image (background left as is)."""
    rgb = _to_rgb(image)
    mask = np.asarray(mask).astype(np.int64)
    if mask.shape != rgb.shape[:2]:
        mask = np.asarray(Image.fromarray(mask.astype(np.int32)).resize(rgb.shape[1::-1], Image.NEAREST))
    colours = palette(max(int(mask.max()) + 1, n_classes or 0))[mask]
    out = rgb.astype(np.float32)
    fg = mask > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.astype(np.uint8)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, radius: int = 1) -> np.ndarray:
    """Mark ``[K, 2]`` (x, y) keypoints on an image; negative coordinates (invisible) are skipped."""
    rgb = _to_rgb(image).copy()
    h, w = rgb.shape[:2]
    cols = palette(len(keypoints) + 1)[1:]
    for k, (x, y) in enumerate(np.asarray(keypoints, dtype=np.float64)):
        if x < 0 or y < 0:
            continue
        xi, yi = int(round(x)), int(round(y))
        rgb[max(0, yi - radius) : min(h, yi + radius + 1), max(0, xi - radius) : min(w, xi + radius + 1)] = cols[k]
    return rgb


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth map -> RGB with a perceptual colour map (near = bright)."""
    import matplotlib

    d = np.asarray(depth, dtype=np.float64).squeeze()
    finite = np.isfinite(d)
    lo, hi = np.percentile(d[finite], [2, 98]) if finite.any() else (0.0, 1.0)
    norm = np.clip((d - lo) / max(hi - lo, 1e-8), 0, 1)
    return (matplotlib.colormaps["magma"](1 - norm)[..., :3] * 255).astype(np.uint8)


def _text_band(width: int, height: int, lines: Sequence[str], x: int = 2) -> np.ndarray:
    """A white ``[height, width, 3]`` strip with ``lines`` of dark text (PIL's built-in font; nothing to download)."""
    from PIL import ImageDraw, ImageFont

    im = Image.new("RGB", (max(1, width), max(1, height)), "white")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    line_h = max(1, height // max(1, len(lines)))
    for i, text in enumerate(lines):
        draw.text((x, i * line_h + 1), text, fill=(40, 40, 40), font=font)
    return np.asarray(im)


def legend_band(width: int, names: Sequence[str], colours: np.ndarray, swatch: int = 10) -> np.ndarray:
    """A white strip naming each colour: ``[swatch] name`` entries, wrapped onto as many rows as ``width`` needs."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    entries = [(str(n), tuple(int(v) for v in c)) for n, c in zip(names, colours)]
    pad, row_h = 4, swatch + 6
    widths = [
        swatch + 4 + int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=font)) + 10 for n, _ in entries
    ]
    rows, x = 1, pad
    for w in widths:
        if x + w > width and x > pad:
            rows, x = rows + 1, pad
        x += w
    im = Image.new("RGB", (max(1, width), rows * row_h + pad), "white")
    draw = ImageDraw.Draw(im)
    x, y = pad, pad // 2
    for (name, col), w in zip(entries, widths):
        if x + w > width and x > pad:
            x, y = pad, y + row_h
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=col, outline=(60, 60, 60))
        draw.text((x + swatch + 4, y + 1), name, fill=(40, 40, 40), font=font)
        x += w
    return np.asarray(im)


def append_legend(path: str | os.PathLike, names: Sequence[str], colours: np.ndarray | None = None) -> Path:
    """Add a legend strip under the PNG at ``path`` (colours default to :func:`palette`, as :func:`overlay_mask` and
    :func:`draw_keypoints` draw them)."""
    img = np.asarray(Image.open(path).convert("RGB"))
    cols = palette(len(names)) if colours is None else np.asarray(colours)
    return _save_png(np.concatenate([img, legend_band(img.shape[1], names, cols)]), path)


def gallery_caption(clusters: np.ndarray, max_clusters: int = 12) -> str:
    """``showing 12 of 40 clusters (largest first)`` -- what :func:`cluster_gallery` draws above its rows."""
    n = len(np.unique(np.asarray(clusters)))
    return f"showing {min(n, max_clusters)} of {n} clusters (largest first)"


def cluster_gallery(
    images: Sequence[str | os.PathLike | np.ndarray],
    clusters: np.ndarray,
    path: str | os.PathLike,
    *,
    max_clusters: int = 12,
    per_row: int = 10,
    size: int = 48,
    truth: np.ndarray | None = None,
    seed: int = 0,
    labels: bool = True,
) -> Path:
    """One row of thumbnails per cluster, largest clusters first, at most ``max_clusters`` rows. With ``labels`` (the
    default) a header says how many of all clusters are shown and each row starts with its cluster id, size and, with
    ``truth``, purity (share of its majority true class). With ``truth``, each thumbnail also gets a top stripe coloured
    by its true class, so impure clusters are visible at a glance."""
    clusters = np.asarray(clusters)
    ids, counts = np.unique(clusters, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:max_clusters]
    rng = np.random.default_rng(seed)
    cols = palette(int(truth.max()) + 2)[1:] if truth is not None and len(truth) else None
    pad = 2
    label_w = 72 if labels else 0
    width = per_row * (size + pad) + pad + label_w
    rows = []
    if labels:
        rows.append(_text_band(width, 14, [gallery_caption(clusters, max_clusters)]))
    for k in order:
        cid, count = ids[k], int(counts[k])
        members = np.flatnonzero(clusters == cid)
        pick = rng.choice(members, size=min(per_row, len(members)), replace=False)
        row = np.full((size + 2 * pad, width, 3), 255, np.uint8)
        if labels:
            text = [f"#{cid}", f"n={count}"]
            if truth is not None and len(truth):
                majority = np.bincount(np.asarray(truth)[members].astype(np.int64) - int(np.min(truth))).max()
                text.append(f"pur {majority / count:.2f}")
            row[:, :label_w] = _text_band(label_w, size + 2 * pad, text)[:, :label_w]
        for j, idx in enumerate(sorted(pick)):
            t = _to_rgb(images[idx], size).copy()
            if cols is not None:
                t[:4] = cols[int(truth[idx]) % len(cols)]
            x = label_w + pad + j * (size + pad)
            row[pad : pad + size, x : x + size] = t
        rows.append(row)
    canvas = np.concatenate(rows) if rows else np.full((size, size, 3), 255, np.uint8)
    return _save_png(canvas, path)


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[float, float]]]:
    """Lightning's CSVLogger file -> {metric: [(step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = float(row.get("step") or 0)
            for k, v in row.items():
                if k in ("step", "epoch") or v in (None, ""):
                    continue
                try:
                    series.setdefault(k, []).append((step, float(v)))
                except ValueError:
                    continue
    return series


def plot_curves(metrics_csv: str | os.PathLike, path: str | os.PathLike, *, title: str = "") -> Path | None:
    """Training curves from a ``metrics.csv`` (one panel per metric, lr-* columns skipped); None when empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {k: v for k, v in read_metrics_csv(metrics_csv).items() if not k.startswith("lr-")}
    if not series:
        return None
    n = len(series)
    ncol = min(3, n)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.8 * nrow), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, sorted(series.items())):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_figure(fig, path)


def _save_figure(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_gan_starts(starts: Sequence[dict], kept: int, kept_history: Sequence[dict], path: str | os.PathLike) -> Path:
    """The quality curves (``fd_vgg`` per kimg) of several GAN starts (``{"candidate", "seed", "history"}``), the kept
    one drawn thick over its whole training (``kept_history``), with the real-vs-real reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for c in starts:
        mine = c["candidate"] == kept
        h = kept_history if mine else c["history"]
        ax.plot([r["kimg"] for r in h], [r["fd_vgg"] for r in h], lw=2.5 if mine else 1.0,
                label=f"start {c['candidate'] + 1} (seed {c['seed']})" + (" - kept" if mine else ""))  # fmt: skip
    ax.axhline(starts[0]["history"][-1]["fd_vgg_real"], color="grey", ls="--", lw=1, label="real vs real")
    ax.set_yscale("log")
    ax.set_xlabel("kimg")
    ax.set_ylabel("fd_vgg (not Inception FID)")
    ax.legend(fontsize=7)
    return _save_figure(fig, path)


def heatmap(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """A non-negative map (e.g. per-pixel uncertainty) -> RGB with the ``inferno`` colour map (high = bright)."""
    import matplotlib

    v = np.nan_to_num(np.asarray(values, dtype=np.float64).squeeze())
    top = vmax if vmax is not None else (float(v.max()) if v.size else 1.0)
    norm = np.clip(v / max(top, 1e-12), 0, 1)
    return (matplotlib.colormaps["inferno"](norm)[..., :3] * 255).astype(np.uint8)


def uncertainty_figure(
    scores: Sequence[float],
    kept: Sequence[bool],
    examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, float]],
    path: str | os.PathLike,
    meaning: str = "mean JS divergence of its most uncertain pixels",
) -> Path:
    """The label generator's uncertainty at a glance: a histogram of every candidate's image score (kept vs filtered
    out) above columns of examples -- image, its label, its per-pixel uncertainty map -- titled with their scores.
    ``meaning``: what the score is, for the histogram's axis (the task's, from the label generator)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, k = np.asarray(scores, dtype=np.float64), np.asarray(kept, dtype=bool)
    ncol = max(1, len(examples))
    fig = plt.figure(figsize=(max(6.0, 1.4 * ncol), 6.2))
    grid = fig.add_gridspec(4, ncol, height_ratios=[1.6, 1, 1, 1])
    ax = fig.add_subplot(grid[0, :])
    bins = np.histogram_bin_edges(s, bins=min(40, max(5, len(s) // 5))) if len(s) else 10
    ax.hist(s[k], bins=bins, color="#3c78d8", label=f"kept ({int(k.sum())})")
    ax.hist(s[~k], bins=bins, color="#e06666", label=f"filtered out ({int((~k).sum())})")
    ax.set_xlabel(f"image uncertainty ({meaning})", fontsize=8)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=7)
    vmax = max((float(np.max(e[2])) for e in examples), default=1.0)
    for j, (img, lab, unc, score) in enumerate(examples):
        for row, (pic, name) in enumerate(((img, "image"), (lab, "label"), (heatmap(unc, vmax), "uncertainty"))):
            a = fig.add_subplot(grid[row + 1, j])
            a.imshow(pic, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            if j == 0:
                a.set_ylabel(name, fontsize=8)
            if row == 0:
                a.set_title(f"{score:.3g}", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
