"""IDX parsing, Fashion-MNIST loading (tiny fixture), digits, class-folder export."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from PIL import Image

from autolabel.data.arrays import export_class_folders, load_digits_arrays, load_fashion_mnist, read_idx
from autolabel.errors import DataError


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    """IDX layout: 0x00 0x00 <type code> <ndim>, big-endian uint32 dims, then big-endian data."""
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _fixture(root, prefix: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(images, 0x08))
    with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(labels, 0x08))
    return images, labels


def test_read_idx_plain_gzip_and_wide_types(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(_idx_bytes(a, 0x0C))
    got = read_idx(tmp_path / "a.idx")
    assert got.shape == (2, 3, 4) and np.array_equal(got, a)
    f = np.linspace(-1, 1, 6, dtype=np.float32)
    with gzip.open(tmp_path / "f.idx.gz", "wb") as fh:
        fh.write(_idx_bytes(f, 0x0D))
    assert np.allclose(read_idx(tmp_path / "f.idx.gz"), f)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    a = np.zeros((4, 5), np.uint8)
    (tmp_path / "short").write_bytes(_idx_bytes(a, 0x08)[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_load_fashion_mnist_from_fixture(tmp_path):
    imgs, labs = _fixture(tmp_path / "fm", "train", 7)
    _fixture(tmp_path / "fm", "t10k", 3, seed=1)
    x, y = load_fashion_mnist(tmp_path / "fm", "train")
    assert x.shape == (7, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x, imgs) and np.array_equal(y, labs)
    assert load_fashion_mnist(tmp_path / "fm", "test")[0].shape == (3, 28, 28)


def test_load_fashion_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist.*root"):
        load_fashion_mnist(tmp_path / "nothing")
    with pytest.raises(DataError, match="train or test"):
        load_fashion_mnist(tmp_path, "val")


def test_real_fashion_mnist_if_installed():
    try:
        x, y = load_fashion_mnist(split="test")
    except DataError:
        pytest.skip("dataset-fashion-mnist is not installed here")
    assert x.shape == (10000, 28, 28) and set(np.unique(y).tolist()) == set(range(10))


def test_digits_arrays():
    x, y = load_digits_arrays()
    assert x.shape == (1797, 8, 8) and x.dtype == np.uint8 and x.max() == 255 and x.min() == 0
    assert y.dtype == np.int64 and set(np.unique(y).tolist()) == set(range(10))


def test_export_class_folders_ids_upscale_and_errors(tmp_path):
    x = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    y = np.array([1, 0, 1])
    out = export_class_folders(x, y, tmp_path / "o", ids=["a", "b", "c"], upscale=2, progress=False)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["class_000/b.png", "class_001/a.png", "class_001/c.png"]
    back = np.asarray(Image.open(out / "class_001" / "c.png"))
    assert back.shape == (8, 8) and np.array_equal(back[::2, ::2], x[2])  # nearest upscale keeps the pixels
    named = export_class_folders(x, y, tmp_path / "n", class_names=["cat", "dog"], progress=False)
    assert (named / "dog" / "000002.png").is_file() and not list(named.glob("*.tmp*"))
    with pytest.raises(DataError, match="one id per image"):
        export_class_folders(x, y, tmp_path / "e", ids=["a"], progress=False)
    with pytest.raises(DataError, match="uint8"):
        export_class_folders(x.astype(np.float32), y, tmp_path / "e", progress=False)
    with pytest.raises(DataError, match="one entry per image"):
        export_class_folders(x, y[:2], tmp_path / "e", progress=False)
    with pytest.raises(DataError, match="upscale"):
        export_class_folders(x, y, tmp_path / "e", upscale=0, progress=False)
