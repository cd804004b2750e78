"""Pictures and the HTML report."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from autolabel.engine.io import write_json
from autolabel.errors import DataError
from autolabel.viz import (
    cluster_gallery,
    colorize_depth,
    draw_keypoints,
    gallery_caption,
    heatmap,
    image_grid,
    overlay_mask,
    palette,
    plot_curves,
    read_metrics_csv,
    uncertainty_figure,
)
from pipelines.report import build_report


def test_palette_background_black_and_distinct():
    p = palette(30)
    assert p.shape == (30, 3) and (p[0] == 0).all()
    assert len({tuple(c) for c in p[:20]}) == 20


def test_image_grid_layout(tmp_path):
    imgs = [np.full((8, 8, 3), i * 20, np.uint8) for i in range(5)]
    out = image_grid(imgs, tmp_path / "g.png", ncol=3, size=8, pad=1)
    arr = np.asarray(Image.open(out))
    assert arr.shape == (2 * 9 + 1, 3 * 9 + 1, 3)
    assert (arr[1:9, 1:9] == 0).all() and (arr[10:18, 10:18] == 80).all()


def test_overlay_keeps_background_and_colours_foreground():
    img = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), int)
    mask[0, 0] = 1
    out = overlay_mask(img, mask, alpha=1.0)
    assert (out[1:, 1:] == 100).all() and tuple(out[0, 0]) == tuple(palette(2)[1])


def test_keypoints_and_depth():
    img = np.zeros((10, 10, 3), np.uint8)
    out = draw_keypoints(img, np.array([[2.0, 3.0], [-1.0, -1.0]]), radius=0)
    assert out[3, 2].any() and out.sum() == out[3, 2].sum()
    d = colorize_depth(np.linspace(1, 5, 100).reshape(10, 10))
    assert d.shape == (10, 10, 3) and d.dtype == np.uint8


def test_heatmap_scales_to_max_and_uncertainty_figure(tmp_path):
    m = np.array([[0.0, 0.5], [1.0, 2.0]])
    rgb = heatmap(m)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].sum() < rgb[1, 0].sum() < rgb[1, 1].sum()  # inferno: brighter = more uncertain
    assert (heatmap(m, vmax=1.0)[1, 0] == heatmap(m, vmax=1.0)[1, 1]).all()  # clipped at vmax
    img = np.zeros((8, 8, 3), np.uint8)
    examples = [(img, img, np.random.default_rng(i).random((8, 8)), 0.1 * i) for i in range(3)]
    path = uncertainty_figure([0.1, 0.2, 0.3, 0.9], [True, True, True, False], examples, tmp_path / "u.png")
    w, h = Image.open(path).size
    assert w > 300 and h > 300


def test_uncertainty_histogram_says_what_the_task_s_score_is(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from autolabel.handsoff.label_generator import SCORE_MEANING, TASKS

    assert set(SCORE_MEANING) == set(TASKS)  # every task's score has a meaning to print
    labels = []
    monkeypatch.setattr(Axes, "set_xlabel", lambda self, text, **kw: labels.append(text))
    img = np.zeros((8, 8, 3), np.uint8)
    uncertainty_figure([0.1, 0.5], [True, False], [(img, img, np.ones((8, 8)), 0.1)], tmp_path / "u.png",
                       SCORE_MEANING["depth"])  # fmt: skip
    assert labels == [f"image uncertainty ({SCORE_MEANING['depth']})"] and "std of the members' depth" in labels[0]


def test_cluster_gallery_rows_largest_first(tmp_path):
    imgs = [np.full((6, 6, 3), 10 * i, np.uint8) for i in range(9)]
    clusters = np.array([0, 1, 1, 1, 2, 2, 0, 1, 3])
    out = cluster_gallery(imgs, clusters, tmp_path / "c.png", per_row=4, size=6, truth=clusters, labels=False)
    arr = np.asarray(Image.open(out))
    assert arr.shape[0] == 4 * (6 + 4)  # four clusters, one row each
    assert (arr[6:8, 2:8] == 10).all()  # first row: cluster 1 (largest), its first member is image 1 (below the stripe)


def test_cluster_gallery_says_what_it_shows(tmp_path):
    """Rows are labeled (id, size, purity) and a header says how many of all clusters are shown."""
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(15), np.arange(15, 0, -1))  # 15 clusters, sizes 15..1
    truth = clusters % 4
    imgs = [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in clusters]
    plain = np.asarray(Image.open(cluster_gallery(imgs, clusters, tmp_path / "a.png", size=48, labels=False)))
    out = np.asarray(Image.open(cluster_gallery(imgs, clusters, tmp_path / "b.png", size=48, truth=truth)))
    assert plain.shape[0] == 12 * 52 and out.shape[0] == 14 + 12 * 52  # capped at 12 rows, plus the header
    assert out.shape[1] == plain.shape[1] + 72  # the label column
    assert (out[14:, :72] < 128).any() and (out[:14] < 128).any()  # text drawn in both
    assert gallery_caption(clusters) == "showing 12 of 15 clusters (largest first)"
    assert gallery_caption(clusters[:10]) == "showing 1 of 1 clusters (largest first)"


def test_report_is_self_contained(tmp_path):
    """report/ keeps working after the stage folders are gone: every <img> points at a file inside report/."""
    import re
    import shutil

    stage = tmp_path / "cluster"
    (stage / "logs").mkdir(parents=True)
    (stage / "logs" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,1.0\n0,1,0.5\n")
    gal = image_grid([np.zeros((4, 4, 3), np.uint8)], stage / "cluster_gallery.png")
    write_json(stage / "manifest.json", {"status": "done", "seconds": 1.0, "finished": "t", "figures": [str(gal)],
                                         "captions": {str(gal): "showing 3 of 9 clusters (largest first)"}})  # fmt: skip
    page = build_report(tmp_path)
    shutil.rmtree(stage)
    moved = tmp_path.parent / f"{tmp_path.name}_moved_report"
    shutil.move(str(page.parent), moved)  # the report folder alone, somewhere else
    text = (moved / "report.html").read_text()
    srcs = re.findall(r"<img src='([^']+)'", text)
    assert len(srcs) == 2  # the gallery and the training curves
    for src in srcs:
        assert not src.startswith(("/", "..")) and (moved / src).is_file(), src
    assert "showing 3 of 9 clusters (largest first)" in text


def test_curves_and_report(tmp_path):
    stage = tmp_path / "train"
    (stage / "logs").mkdir(parents=True)
    (stage / "logs" / "metrics.csv").write_text("epoch,step,train/loss,lr-SGD\n0,0,1.0,0.1\n0,1,0.5,0.1\n0,2,0.25,\n")
    series = read_metrics_csv(stage / "logs" / "metrics.csv")
    assert series["train/loss"] == [(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)]
    assert plot_curves(stage / "logs" / "metrics.csv", tmp_path / "c.png").is_file()
    gal = image_grid([np.zeros((4, 4, 3), np.uint8)], stage / "samples.png")
    write_json(
        stage / "manifest.json",
        {"status": "done", "seconds": 1.5, "finished": "2026-01-01T00:00:00", "metrics": {"f": 0.5},
         "figures": [str(gal)]},
    )  # fmt: skip
    write_json(tmp_path / "summary.json", {"pairwise_f": 0.75, "baselines": {"kmeans": {"pairwise_f": 0.5}}})
    page = build_report(tmp_path)
    text = page.read_text()
    assert "train" in text and "0.7500" in text and "kmeans" in text and "samples" in text
    assert (page.parent / "train_curves.png").is_file()


def test_report_errors(tmp_path):
    with pytest.raises(DataError, match="run directory not found"):
        build_report(tmp_path / "nope")
    with pytest.raises(DataError, match="no finished stage"):
        build_report(tmp_path)


def test_append_legend_names_the_overlay_colours(tmp_path):
    import numpy as np
    from PIL import Image

    from autolabel.viz import append_legend, palette

    Image.fromarray(np.zeros((20, 120, 3), np.uint8)).save(tmp_path / "fig.png")
    cols = palette(3)[1:]
    append_legend(tmp_path / "fig.png", ["horse", "rider"], cols)
    out = np.asarray(Image.open(tmp_path / "fig.png").convert("RGB"))
    assert out.shape[0] > 20 and out.shape[1] == 120 and (out[:20] == 0).all()
    band = out[20:].reshape(-1, 3)
    for c in cols:  # each class's swatch is drawn in its overlay colour
        assert (band == c).all(1).sum() >= 50
