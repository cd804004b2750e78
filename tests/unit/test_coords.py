"""One coordinate convention everywhere: a keypoint marks a dot drawn in the image; after any resize (images by PIL or
bilinear interpolation, keypoints by the project's rescale) the keypoint must still sit on the dot. The dot's position
after resizing is measured from the resized pixels (intensity centroid), never from the implementation's formula."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.data.coords import rescale_xy
from autolabel.data.labeled import LabeledFolder, SyntheticLabels
from autolabel.gan import Generator
from autolabel.handsoff.hypercolumns import HypercolumnExtractor, rescale_coords
from autolabel.handsoff.label_generator import decode_keypoints
from autolabel.handsoff.synthesis import _to_image_grid

# (source width, height) -> target square size; upscales, downscales, non-integer factors, a non-square source
SCALES = [((16, 16), 64), ((16, 16), 48), ((20, 20), 64), ((64, 64), 16), ((60, 60), 24), ((40, 32), 40)]


def _dot(w: int, h: int, x: float, y: float, sigma: float) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))


def _centroid(a: np.ndarray) -> tuple[float, float]:
    a = np.asarray(a, np.float64)
    a = np.clip(a - np.median(a), 0, None)  # background off
    ys, xs = np.mgrid[: a.shape[0], : a.shape[1]]
    return float((a * xs).sum() / a.sum()), float((a * ys).sum() / a.sum())


def test_rescale_xy_known_answers_and_round_trip():
    xy = np.array([[0.0, 0.0], [3.0, 1.0]], np.float32)
    # x' = (x + .5) * 8 / 4 - .5, y' = (y + .5) * 2 / 2 - .5
    assert rescale_xy(xy, (4, 2), (8, 2)).tolist() == [[0.5, 0.0], [6.5, 1.0]]
    t = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(rescale_xy(rescale_xy(t, (7, 5), (30, 11)), (30, 11), (7, 5)), t)
    torch.testing.assert_close(rescale_coords(t, 8, 16), rescale_xy(t, (8, 8), (16, 16)))


@pytest.mark.parametrize(("src", "dst"), SCALES)
def test_labeled_folder_keypoint_stays_on_the_dot(tmp_path, src, dst):
    w, h = src
    x0, y0 = 0.62 * w + 0.3, 0.38 * h - 0.2  # off-centre, sub-pixel: corner-aligned rescaling misses it
    sigma = max(w, h) / 16  # small enough that the image border does not cut the dot's tail
    img = (_dot(w, h, x0, y0, sigma) * 255).round().astype(np.uint8)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / "images" / "a.png")
    (tmp_path / "keypoints.csv").write_text(f"image,x0,y0\na.png,{x0:.4f},{y0:.4f}\n")
    ds = LabeledFolder(tmp_path, task="keypoints", size=dst)
    item = ds[0]
    resized = (item["image"][0].numpy() + 1) * 127.5  # what PIL's resize made of the dot
    cx, cy = _centroid(resized)
    kx, ky = item["keypoints"][0].tolist()
    assert abs(kx - cx) < 0.1 and abs(ky - cy) < 0.1, ((kx, ky), (cx, cy))
    # the same folder read as a synthetic keypoint dataset (labels/<id>.json) lands on the same spot
    syn = tmp_path / "syn"
    (syn / "images").mkdir(parents=True)
    (syn / "labels").mkdir()
    Image.fromarray(np.stack([img] * 3, -1)).save(syn / "images" / "00000000.png")
    label = {"resolution": [h, w], "keypoints": [{"x": x0, "y": y0, "confidence": 1.0}]}
    (syn / "labels" / "00000000.json").write_text(json.dumps(label))
    (syn / "manifest.jsonl").write_text('{"id": "00000000"}\n')
    s_item = SyntheticLabels(syn, "keypoints", size=dst)[0]
    torch.testing.assert_close(s_item["keypoints"], item["keypoints"])


@pytest.mark.parametrize(("a", "b"), [(8, 16), (4, 16), (16, 12), (12, 40)])
def test_hypercolumn_resize_keeps_a_feature_dot_at_its_rescaled_position(a, b):
    torch.manual_seed(0)
    g = Generator(resolution=16, z_dim=8, w_dim=8, n_mapping=1, channel_base=32, channel_max=8).eval()
    ext = HypercolumnExtractor(g, resolution=b)
    x0, y0 = 0.65 * a, 0.35 * a
    fmap = torch.from_numpy(_dot(a, a, x0, y0, a / 8)).float()[None, None]
    resized = ext.resize_all([fmap])[0, 0].numpy()  # what the label generator sees
    cx, cy = _centroid(resized)
    px, py = rescale_coords(torch.tensor([x0, y0]), a, b).tolist()
    assert abs(px - cx) < 0.1 and abs(py - cy) < 0.1, ((px, py), (cx, cy))
    # gathering hypercolumns at a working pixel samples the map at that pixel's centre
    idx = torch.tensor([round(py) * b + round(px)])
    col = ext.gather([fmap], idx)[0, 0, 0].item()
    assert col == pytest.approx(float(resized[round(py), round(px)]), abs=1e-5)


@pytest.mark.parametrize(("working", "size"), [(8, 16), (16, 32), (16, 8), (12, 16)])
def test_synthesis_keypoints_sit_on_the_written_label_maps(working, size):
    """Synthesis decodes keypoints on the working grid and writes them at the image size; the label maps (uncertainty,
    depth) are resized bilinearly to the image size. A dot at the keypoint on the working grid must land under the
    written keypoint."""
    x0, y0 = 0.7 * working - 0.3, 0.25 * working + 0.4
    heat = torch.from_numpy(_dot(working, working, x0, y0, working / 10)).float()
    coords, _ = decode_keypoints(heat[None, None])
    written = rescale_coords(coords[0].float(), working, size)[0].tolist()
    maps = _to_image_grid({"uncertainty": heat, "depth": heat}, "depth", working, size)
    for key in ("uncertainty", "depth"):
        cx, cy = _centroid(maps[key].numpy())
        assert abs(written[0] - cx) < 0.15 and abs(written[1] - cy) < 0.15, (key, written, (cx, cy))


@pytest.mark.parametrize("factor", [2, 3])
def test_flip_keeps_a_keypoint_on_its_dot(factor):
    from autolabel.tasks.segmentation import flip_item

    w = 8 * factor
    x0, y0 = 0.65 * w, 0.4 * w
    img = torch.from_numpy(_dot(w, w, x0, y0, w / 16)).float()[None].repeat(3, 1, 1)
    item = flip_item({"image": img, "keypoints": torch.tensor([[x0, y0]]), "visible": torch.tensor([True])})
    cx, cy = _centroid(item["image"][0].numpy())
    assert item["keypoints"][0].tolist() == pytest.approx([cx, cy], abs=0.05)
