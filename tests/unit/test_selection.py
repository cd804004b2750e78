"""Which images to label (``autolabel.selection``): one pick per largest cluster, nearest its centre or its density
peak; extra picks spread over the largest clusters; the written selection; the errors a user meets."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from autolabel.data.pools import l2_normalize
from autolabel.errors import ConfigError, DataError
from autolabel.selection import allocate, pick_representatives, pixel_features, select_images


def _blobs(sizes, dim=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.normal(size=(len(sizes), dim)))
    x = np.concatenate([centres[i] + spread * rng.normal(size=(s, dim)) for i, s in enumerate(sizes)])
    return l2_normalize(x), np.repeat(np.arange(len(sizes)), sizes)


def test_one_pick_per_cluster_largest_first_nearest_the_centroid():
    x, y = _blobs([5, 12, 8, 3])
    sel = pick_representatives(x, y, 3)
    assert sel.cluster.tolist() == [1, 2, 0]  # the three largest, by size
    assert sel.cluster_size.tolist() == [12, 8, 5] and sel.represents.tolist() == [12, 8, 5]
    for i, c in zip(sel.index, sel.cluster):
        members = np.flatnonzero(y == c)
        centre = l2_normalize(x[members].mean(0, keepdims=True))[0]
        assert i == members[np.argmax(x[members] @ centre)]  # the member nearest the cluster's centroid
        assert y[i] == c
    assert np.all(sel.score > 0.9) and np.all(sel.score <= 1.0 + 1e-6)


def test_density_peaks_are_picked_when_given():
    x, y = _blobs([6, 6])
    density = np.zeros(len(x))
    density[[2, 9]] = [5.0, 7.0]
    sel = pick_representatives(x, y, 2, density=density)
    assert sorted(sel.index.tolist()) == [2, 9]
    assert sorted(pick_representatives(x, y, 2).index.tolist()) != [2, 9]  # without densities: the centroids


def test_allocate_dhondt_capped_by_cluster_size():
    assert allocate(np.array([30, 20, 10]), 7).tolist() == [4, 2, 1]
    assert allocate(np.array([30, 20, 10]), 2).tolist() == [1, 1, 0]
    assert allocate(np.array([3, 1]), 4).tolist() == [3, 1]
    with pytest.raises(DataError, match="n=5"):
        allocate(np.array([3, 1]), 5)


def test_fewer_clusters_than_n_spread_inside_the_largest():
    # one "cluster" made of two tight sub-blobs, plus a small one: 3 picks -> 2 in the big one, one per sub-blob
    x, sub = _blobs([10, 10, 4], spread=0.02, seed=3)
    y = np.where(sub == 2, 1, 0)
    sel = pick_representatives(x, y, 3)
    assert len(set(sel.index.tolist())) == 3
    big = [i for i, c in zip(sel.index, sel.cluster) if c == 0]
    assert len(big) == 2 and {int(sub[i]) for i in big} == {0, 1}  # spread: one in each sub-blob
    assert sel.cluster.tolist()[:2] == [0, 1]  # first round: one per cluster, largest first; then the extra pick
    assert sorted(sel.represents.tolist()) == [4, 10, 10]


def test_pick_errors():
    x, y = _blobs([3, 2])
    with pytest.raises(DataError, match="n=6 but the pool holds 5"):
        pick_representatives(x, y, 6)
    with pytest.raises(ConfigError, match="n=0"):
        pick_representatives(x, y, 0)


def test_pixel_features_are_centred_unit_rows():
    imgs = np.random.default_rng(0).integers(0, 255, size=(5, 4, 4, 3), dtype=np.uint8)
    f = pixel_features(imgs)
    assert f.shape == (5, 48) and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
    assert pixel_features(np.repeat(imgs[:1], 2, 0)).sum() == 0  # identical images: nothing but the mean


def _pool(root, n=12, size=8):
    rng = np.random.default_rng(0)
    for i in range(n):
        colour = [255, 0, 0] if i % 3 == 0 else [0, 0, 255] if i % 3 == 1 else [0, 255, 0]
        arr = np.clip(np.array(colour)[None, None] + rng.integers(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        sub = root / ("a" if i < n // 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(sub / f"{i:03d}.png")
    return root


def test_select_images_writes_the_selection(tmp_path):
    pool = _pool(tmp_path / "pool")
    res = select_images(pool, 3, tmp_path / "out")
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "selected.csv").open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["rank", "id", "source", "cluster", "cluster_size", "represents", "score"]
    assert sorted(int(r["cluster_size"]) for r in rows) == [4, 4, 4]  # the three colours are the three clusters
    colours = {int(np.argmax(np.asarray(Image.open(r["source"])).reshape(-1, 3).mean(0))) for r in rows}
    assert colours == {0, 1, 2}  # one red, one green, one blue
    for r in rows:  # flat names for images in subfolders; byte-identical copies
        assert "__" in r["id"] and (out / "images" / f"{r['id']}.png").read_bytes() == open(r["source"], "rb").read()
    assert list((out / "masks").iterdir()) == [] and "masks/" in (out / "LABEL_ME.txt").read_text()
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width > 3 * 96 and sheet.height >= 96
    assert res["metrics"]["clusters_covered"] == 3 and res["metrics"]["pool_share_covered"] == 1.0
    assert res["metrics"]["embedder"] == "pixels:16" and (out / "pool.npz").is_file()


def test_select_images_errors(tmp_path):
    pool = _pool(tmp_path / "pool", n=4)
    with pytest.raises(DataError, match="n=5 but images=.* holds 4 images"):
        select_images(pool, 5, tmp_path / "o1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="the pool is empty"):
        select_images(tmp_path / "empty", 1, tmp_path / "o2")
