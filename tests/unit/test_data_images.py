"""Image listing and the image-folder dataset: ranges, labels from class folders, ids, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.data.images import ImageFolderDataset, list_images, to_tensor, to_uint8
from autolabel.errors import ConfigError, DataError


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_list_images_recursive_sorted_and_filtered(tmp_path):
    for rel in ("b/2.png", "a/1.JPG", "a/0.webp", "c.bmp"):
        _save(tmp_path / rel, np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    got = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert got == ["a/0.webp", "a/1.JPG", "b/2.png", "c.bmp"]


def test_list_images_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match=r"\.png.*\.webp"):
        list_images(tmp_path)


def test_class_folders_give_labels_ids_and_range(tmp_path):
    _save(tmp_path / "zebra" / "z0.png", np.full((6, 10, 3), 255, np.uint8))
    _save(tmp_path / "ant" / "a0.png", np.zeros((6, 6, 3), np.uint8))
    _save(tmp_path / "ant" / "a1.png", np.full((6, 6), 128, np.uint8))  # greyscale file in an RGB dataset
    ds = ImageFolderDataset(tmp_path, size=8)
    assert ds.classes == ["ant", "zebra"] and ds.has_labels
    assert ds.ids == ["ant/a0", "ant/a1", "zebra/z0"]
    assert ds.labels.tolist() == [0, 0, 1]
    x, y = ds[2]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y == 1
    assert torch.allclose(x, torch.ones_like(x))  # white -> +1 (range is [-1, 1])
    assert torch.allclose(ds[0][0], -torch.ones(3, 8, 8))
    grey = ImageFolderDataset(tmp_path, size=5, channels=1)
    assert grey[1][0].shape == (1, 5, 5)


def test_flat_folder_has_no_labels(tmp_path):
    _save(tmp_path / "p0.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "p1.png", np.zeros((4, 4, 3), np.uint8))
    ds = ImageFolderDataset(tmp_path, size=4)
    assert not ds.has_labels and ds.classes == [] and ds[0][1] == -1 and ds.ids == ["p0", "p1"]
    with pytest.raises(DataError, match="class subfolder"):
        ImageFolderDataset(tmp_path, size=4, with_labels=True)


def test_unreadable_image_names_the_file(tmp_path):
    _save(tmp_path / "ok.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(tmp_path, size=4)
    with pytest.raises(DataError, match="broken.png"):
        ds[0]


def test_bad_arguments(tmp_path):
    _save(tmp_path / "ok.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match="channels"):
        ImageFolderDataset(tmp_path, size=4, channels=2)
    with pytest.raises(ConfigError, match="size"):
        ImageFolderDataset(tmp_path, size=0)


def test_tensor_uint8_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = to_tensor(arr)
    assert t.shape == (3, 5, 7) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(to_uint8(t), arr)
    assert to_uint8(t[None]).shape == (1, 5, 7, 3)
