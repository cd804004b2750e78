import csv
import time

import numpy as np
import pytest

from autolabel.data.labeled import LabeledFolder
from autolabel.data.procedural import make_shapes_dataset
from autolabel.data.synthetic import make_blob_features
from autolabel.errors import ConfigError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    t = time.perf_counter()
    make_shapes_dataset(root, 50, size=24, seed=3)
    return root, time.perf_counter() - t


def test_shapes_fast_and_complete(shapes):
    root, elapsed = shapes
    assert elapsed < 5.0
    for sub in ("images", "masks", "depth", "unlabeled"):
        assert (root / sub).is_dir()
    seg = LabeledFolder(root, task="segmentation")
    assert len(seg) == 50 and seg.n_classes == 5
    rows = list(csv.DictReader(open(root / "classes.csv")))
    assert len(rows) == 50 and len({r["category"] for r in rows}) == 12
    cats = sorted(p.name for p in (root / "unlabeled").iterdir())
    assert len(cats) == 12 and sum(len(list((root / "unlabeled" / c).iterdir())) for c in cats) == 50


def test_label_consistency(shapes):
    root, _ = shapes
    seg = LabeledFolder(root, task="segmentation")
    kp = LabeledFolder(root, task="keypoints")
    dep = LabeledFolder(root, task="depth")
    rows = {r["image"].split(".")[0]: r for r in csv.DictReader(open(root / "classes.csv"))}
    for i in range(len(seg)):
        mask = seg[i]["mask"]
        shape = int(rows[seg.ids[i]]["shape"])
        assert set(mask.unique().tolist()) == {0, shape + 1}
        pts = kp[i]["keypoints"].round().long()
        assert kp[i]["visible"].all()
        assert (mask[pts[:, 1], pts[:, 0]] > 0).all()  # every keypoint lies on the object
        d = dep[i]["depth"][0]
        assert np.isfinite(d.numpy()).all()
        assert d[mask > 0].mean() < d[mask == 0].mean()  # object is closer than the background
        ys, xs = np.nonzero(mask.numpy())
        assert pts[0, 1] == ys.min() and pts[1, 1] == ys.max() and pts[2, 0] == xs.min() and pts[3, 0] == xs.max()


def test_shapes_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_shapes_dataset(a, 6, size=16, seed=1)
    make_shapes_dataset(b, 6, size=16, seed=1)
    make_shapes_dataset(c, 6, size=16, seed=2)
    for rel in ("images/000004.png", "masks/000004.png", "depth/000004.npy", "keypoints.csv", "classes.csv"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / "images/000004.png").read_bytes() != (c / "images/000004.png").read_bytes()
    with pytest.raises(ConfigError, match="n_classes_shapes"):
        make_shapes_dataset(tmp_path / "d", 2, n_classes_shapes=9)
    with pytest.raises(ConfigError, match="n_colors"):
        make_shapes_dataset(tmp_path / "d", 2, n_colors=0)


def test_blob_features():
    x, y = make_blob_features(5, 20, 16, spread=0.1, seed=0)
    assert x.shape == (100, 16) and x.dtype == np.float32 and y.shape == (100,)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.bincount(y).tolist() == [20] * 5
    # tight blobs: nearest neighbour (cosine) shares the label
    sim = x @ x.T
    np.fill_diagonal(sim, -2)
    assert (y[sim.argmax(1)] == y).mean() > 0.95
    x2, y2 = make_blob_features(5, 20, 16, spread=0.1, seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    with pytest.raises(ConfigError, match="make_blob_features"):
        make_blob_features(0, 1, 4)
