import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.data.labeled import LabeledFolder, write_labeled_folder
from autolabel.errors import ConfigError, DataError


def _images(n=3, h=8, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_segmentation_round_trip_and_resize(tmp_path):
    imgs = _images()
    masks = np.zeros((3, 8, 10), np.uint8)
    masks[:, 2:6, 3:7] = 2
    masks[1, 0, 0] = 1
    write_labeled_folder(tmp_path, imgs, "segmentation", masks, ids=["a", "b", "c"])
    ds = LabeledFolder(tmp_path)
    assert ds.task == "segmentation" and len(ds) == 3 and ds.n_classes == 3 and ds.mask_mode_resolved == "index"
    item = ds[1]
    assert item["id"] == "b" and item["image"].shape == (3, 8, 10) and item["mask"].dtype == torch.long
    assert torch.equal(item["mask"], torch.from_numpy(masks[1]).long())
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    expected = torch.from_numpy(imgs[1].transpose(2, 0, 1)).float() / 127.5 - 1
    assert torch.allclose(item["image"], expected, atol=1e-6)
    assert ds.class_histogram().tolist() == [3 * 80 - 48 - 1, 1, 48]
    small = LabeledFolder(tmp_path, size=(4, 5), limit=2)
    assert len(small) == 2 and small[0]["mask"].shape == (4, 5) and set(small[0]["mask"].unique().tolist()) <= {0, 2}
    sub = LabeledFolder(tmp_path, indices=[2])
    assert sub.ids == ["c"]


def test_binary_mask_auto_and_class_range(tmp_path):
    imgs = _images(2)
    masks = np.zeros((2, 8, 10), np.uint8)
    masks[:, :4] = 255
    masks[0, 5, 5] = 240  # JPEG-like ringing stays near 255
    write_labeled_folder(tmp_path, imgs, "segmentation", masks)
    ds = LabeledFolder(tmp_path)
    assert ds.mask_mode_resolved == "binary" and ds.n_classes == 2
    assert ds[0]["mask"][:4].eq(1).all() and ds[0]["mask"][5, 5] == 1 and ds[0]["mask"][6, 0] == 0
    with pytest.raises(DataError, match="class index 255 >= n_classes=2"):
        LabeledFolder(tmp_path, mask_mode="index", n_classes=2, ignore_index=None)
    with pytest.raises(DataError, match="class index 240 >= n_classes=2"):  # 255 = void by default: not a class
        LabeledFolder(tmp_path, mask_mode="index", n_classes=2)
    with pytest.raises(ConfigError, match="mask_mode"):
        LabeledFolder(tmp_path, mask_mode="weird")


def test_weizmann_style_jpeg_masks_different_pixel_size(tmp_path):
    rgb, fg = tmp_path / "rgb", tmp_path / "figure_ground"
    rgb.mkdir()
    fg.mkdir()
    for i in range(2):
        Image.fromarray(_images(1, 20, 30, seed=i)[0]).save(rgb / f"horse{i:03d}.jpg")
        m = np.zeros((10, 15), np.uint8)
        m[3:8, 4:12] = 255
        Image.fromarray(m).save(fg / f"horse{i:03d}.jpg", quality=75)
    ds = LabeledFolder.from_dirs(rgb, fg)
    assert ds.mask_mode_resolved == "binary" and ds.n_classes == 2
    assert ds[0]["image"].shape == (3, 10, 15) and ds[0]["mask"].shape == (10, 15)
    assert ds[0]["mask"][5, 8] == 1 and ds[0]["mask"][0, 0] == 0
    with pytest.raises(DataError, match="pixel-aligned"):
        LabeledFolder.from_dirs(rgb, fg, resize_images_to_mask=False)
    # a different aspect ratio is refused even with resize_images_to_mask
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(fg / "horse001.jpg")
    with pytest.raises(DataError, match=r"horse001.jpg: image 30x20 but label 10x10"):
        LabeledFolder.from_dirs(rgb, fg)
    with pytest.raises(DataError, match="masks folder not found"):
        LabeledFolder.from_dirs(rgb, tmp_path / "nope")


def test_keypoints_round_trip_visibility_and_scaling(tmp_path):
    imgs = _images(2, 9, 9)
    kps = np.array([[[0, 0], [8, 8]], [[4, 2], [-1, -1]]], np.float32)
    write_labeled_folder(tmp_path, imgs, "keypoints", kps, ids=["p", "q"])
    ds = LabeledFolder(tmp_path)
    assert ds.task == "keypoints" and ds.n_keypoints == 2
    assert torch.allclose(ds[0]["keypoints"], torch.tensor([[0.0, 0.0], [8.0, 8.0]]))
    assert ds[1]["visible"].tolist() == [True, False]
    up = LabeledFolder(tmp_path, size=17)  # (17-1)/(9-1) = 2x
    assert torch.allclose(up[0]["keypoints"], torch.tensor([[0.0, 0.0], [16.0, 16.0]]))
    assert torch.allclose(up[1]["keypoints"], torch.tensor([[8.0, 4.0], [-1.0, -1.0]]))


def test_keypoints_errors(tmp_path):
    imgs = _images(1, 9, 9)
    write_labeled_folder(tmp_path, imgs, "keypoints", np.array([[[3, 12]]], np.float32), ids=["p"])
    with pytest.raises(DataError, match=r"row 2: keypoint 0 = \(3, 12\) outside image 9x9"):
        LabeledFolder(tmp_path)
    (tmp_path / "keypoints.csv").write_text("image,x0,y0\np.png,3\n")
    with pytest.raises(DataError, match="row 2: 2 fields"):
        LabeledFolder(tmp_path)
    (tmp_path / "keypoints.csv").write_text("image,x0,y0\np.png,3,abc\n")
    with pytest.raises(DataError, match="row 2: non-numeric"):
        LabeledFolder(tmp_path)
    (tmp_path / "keypoints.csv").write_text("name,x0\n")
    with pytest.raises(DataError, match="row 1: header"):
        LabeledFolder(tmp_path)


def test_depth_round_trip_resize_and_nan(tmp_path):
    imgs = _images(2, 8, 8)
    depth = np.random.default_rng(1).uniform(1, 5, (2, 8, 8)).astype(np.float32)
    write_labeled_folder(tmp_path, imgs, "depth", depth)
    ds = LabeledFolder(tmp_path)
    assert ds.task == "depth" and ds[0]["depth"].shape == (1, 8, 8)
    assert torch.allclose(ds[1]["depth"][0], torch.from_numpy(depth[1]))
    assert LabeledFolder(tmp_path, size=4)[0]["depth"].shape == (1, 4, 4)
    bad = depth[0].copy()
    bad[0, 0] = np.nan
    np.save(tmp_path / "depth" / "000000.npy", bad)
    with pytest.raises(DataError, match="000000 contains NaN"):
        LabeledFolder(tmp_path)


def test_depth_16bit_png(tmp_path):
    write_labeled_folder(tmp_path, _images(1, 6, 6), "depth", np.ones((1, 6, 6), np.float32))
    (tmp_path / "depth" / "000000.npy").unlink()
    Image.fromarray(np.full((6, 6), 1000, np.uint16)).save(tmp_path / "depth" / "000000.png")
    ds = LabeledFolder(tmp_path)
    assert float(ds[0]["depth"].mean()) == pytest.approx(1000.0)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="labeled folder not found"):
        LabeledFolder(tmp_path / "missing")
    with pytest.raises(DataError, match="images folder missing"):
        LabeledFolder(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="images folder is empty"):
        LabeledFolder(tmp_path)
    imgs = _images(4)
    write_labeled_folder(tmp_path, imgs, "segmentation", np.zeros((4, 8, 10), np.uint8))
    for s in ("000001", "000003"):
        (tmp_path / "masks" / f"{s}.png").unlink()
    with pytest.raises(DataError, match=r"2 image\(s\) without a mask, e.g. 000001, 000003"):
        LabeledFolder(tmp_path)
    write_labeled_folder(tmp_path, imgs, "depth", np.ones((4, 8, 10), np.float32), write_images=False)
    with pytest.raises(DataError, match="several label kinds"):
        LabeledFolder(tmp_path)
    with pytest.raises(DataError, match="task=keypoints but .*keypoints.csv is missing"):
        LabeledFolder(tmp_path, task="keypoints")
    with pytest.raises(ConfigError, match="task='blur'"):
        LabeledFolder(tmp_path, task="blur")
    with pytest.raises(ConfigError, match="indices out of range"):
        LabeledFolder(tmp_path, task="depth", indices=[9])


def test_no_labels_and_size_mismatch(tmp_path):
    write_labeled_folder(tmp_path, _images(1), "segmentation", np.zeros((1, 8, 10), np.uint8))
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "masks" / "000000.png")
    with pytest.raises(DataError, match="000000.png: image 10x8 but label 9x8"):
        LabeledFolder(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "masks")
    with pytest.raises(DataError, match="no labels in"):
        LabeledFolder(tmp_path)


def test_writer_errors(tmp_path):
    with pytest.raises(DataError, match="uint8"):
        write_labeled_folder(tmp_path, np.zeros((1, 4, 4, 3), np.float32), "depth", np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match="one of each"):
        write_labeled_folder(tmp_path, _images(2), "depth", np.zeros((1, 8, 10)))
    with pytest.raises(ConfigError, match="task="):
        write_labeled_folder(tmp_path, _images(1), "pose", np.zeros((1, 8, 10)))


def test_class_count_is_taken_before_resizing(tmp_path):
    imgs = _images(2, 16, 16)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 4:12, 4:12] = 1
    masks[1, 5, 5] = 4  # a one-pixel class: nearest resizing to 4 px drops it, it is still one of the classes
    write_labeled_folder(tmp_path, imgs, "segmentation", masks)
    with pytest.warns(UserWarning, match="000001.png: mask value 4 covers only 1 of 512"):  # stray-value check
        ds = LabeledFolder(tmp_path, size=4, mask_check="warn")
    assert ds.n_classes == 5 and int(max(ds[i]["mask"].max() for i in range(2))) < 4
    assert LabeledFolder(tmp_path, size=4, n_classes=7).n_classes == 7
    with pytest.raises(DataError, match="class index 4 >= n_classes=3"):
        LabeledFolder(tmp_path, size=4, n_classes=3)  # the resized masks alone would pass (max 1)


def test_ids_select_samples(tmp_path):
    write_labeled_folder(tmp_path, _images(3), "segmentation", np.zeros((3, 8, 10), np.uint8), ids=["a", "b", "c"])
    assert LabeledFolder(tmp_path, ids=["c", "a"]).ids == ["a", "c"]
    with pytest.raises(DataError, match="no image .* e.g. z"):
        LabeledFolder(tmp_path, ids=["a", "z"])


def _synthetic(root, task, ids, kept):
    """A stand-in `autolabel synthesize` output: every id has images/ and labels/, only `kept` are in the manifest."""
    import json

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, s in enumerate(ids):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / "images" / f"{s}.png")
        if task == "segmentation":
            Image.fromarray(np.full((8, 8), i % 2, np.uint8)).save(root / "labels" / f"{s}.png")
        elif task == "depth":
            np.save(root / "labels" / f"{s}.npy", np.full((8, 8), float(i), np.float32))
        else:
            pts = [{"x": 7.0, "y": float(i), "confidence": 0.9}]
            (root / "labels" / f"{s}.json").write_text(json.dumps({"resolution": 8, "keypoints": pts}))
    (root / "plan.json").write_text(json.dumps({"task": task}))
    if kept is not None:
        (root / "manifest.jsonl").write_text("".join(json.dumps({"id": s, "uncertainty": 0.1}) + "\n" for s in kept))


@pytest.mark.parametrize("task", ["segmentation", "keypoints", "depth"])
def test_synthetic_datasets_read_only_the_manifest(tmp_path, task):
    from autolabel.data.labeled import open_synthetic, synthetic_task

    ids = ["00000000", "00000001", "00000002", "00000003"]
    _synthetic(tmp_path / "merged", task, ids, kept=["00000001", "00000003"])
    assert synthetic_task(tmp_path / "merged") == task
    ds = open_synthetic(tmp_path / "merged", task, size=4)
    assert ds.ids == ["00000001", "00000003"] and len(ds) == 2  # the filtered-out candidates are not read
    item = ds[1]
    assert item["image"].shape == (3, 4, 4) and item["image"][0, 0, 0].item() == pytest.approx(120 / 127.5 - 1)
    if task == "segmentation":
        assert item["mask"].eq(1).all()
    elif task == "depth":
        assert item["depth"].eq(3.0).all()
    else:
        assert item["keypoints"].tolist() == [[3.0, pytest.approx(3 * 3 / 7)]]  # (7, 3) * (4 - 1) / (8 - 1)
    _synthetic(tmp_path / "unmerged", task, ids, kept=None)
    with pytest.raises(DataError, match="no manifest.jsonl: the synthesis run is unfinished or unmerged"):
        open_synthetic(tmp_path / "unmerged", task, size=4)


def test_holdout_split_and_subset(tmp_path):
    from autolabel.data.labeled import FolderSubset, holdout_split

    val, rest = holdout_split(10, 0.2)
    assert len(val) == 2 and sorted(val + rest) == list(range(10)) and holdout_split(10, 0.2) == (val, rest)
    assert holdout_split(3, 0.01)[0] != [] and len(holdout_split(3, 0.9)[1]) == 1  # at least one on each side
    assert holdout_split(5, 0.0) == ([], [0, 1, 2, 3, 4])
    with pytest.raises(DataError, match="val_fraction=0"):
        holdout_split(1, 0.2)
    write_labeled_folder(tmp_path, _images(3), "segmentation", np.zeros((3, 8, 10), np.uint8), ids=["a", "b", "c"])
    sub = FolderSubset(LabeledFolder(tmp_path), [2, 0])
    assert (sub.task, sub.n_classes, sub.ids, len(sub), sub[0]["id"]) == ("segmentation", 1, ["c", "a"], 2, "c")
