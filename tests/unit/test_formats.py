"""Label formats in and out (COCO, VOC/CVAT, YOLO, labeled folders, synthetic datasets) on tiny generated data."""

import json

import numpy as np
import pytest
from PIL import Image

from autolabel.data.formats import detect_format, export_dataset, read_labels
from autolabel.data.formats.meta import voc_palette
from autolabel.data.labeled import LabeledFolder, write_labeled_folder
from autolabel.errors import DataError

pytest.importorskip("pycocotools")
pytest.importorskip("cv2")


def _images(n, h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _masks(n, h=24, w=32):
    """Hole-free regions of classes 1 and 2 (a rectangle and a disc) at per-image offsets."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        out[i, 2 + i : 9 + i, 3:12] = 1
        out[i][(yy - 15) ** 2 + (xx - 22 + i) ** 2 <= 16] = 2
    return out


def _save_p(path, arr):
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette([v for c in voc_palette() for v in c])
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def test_voc_index_masks_with_void_borders_keep_their_classes(tmp_path):
    masks = _masks(2).astype(np.int32)
    masks[:, :, 0] = 255  # a void column, like VOC's object borders
    masks[0, 1, 2:13] = 255
    for i, img in enumerate(_images(2)):
        (tmp_path / "JPEGImages").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / "JPEGImages" / f"im{i}.png")
        _save_p(tmp_path / "SegmentationClass" / f"im{i}.png", masks[i])
    assert detect_format(tmp_path) == "voc"
    ds = LabeledFolder(tmp_path)
    assert ds.task == "segmentation" and ds.n_classes == 3 and ds.ignore_index == 255
    for i in range(2):
        assert np.array_equal(ds[i]["mask"].numpy(), masks[i])
    # the same masks as grey PNGs in images/ + masks/: auto mode must not take them for binary 0/255 masks
    write_labeled_folder(tmp_path / "plain", _images(2), "segmentation", masks.astype(np.uint8))
    plain = LabeledFolder(tmp_path / "plain")
    assert plain.mask_mode_resolved == "index" and plain.n_classes == 3
    assert np.array_equal(plain[1]["mask"].numpy(), masks[1])
    # exporting as VOC and reading back keeps classes and void
    export_dataset(tmp_path, "voc", tmp_path / "out")
    back = read_labels(tmp_path / "out")
    assert all(np.array_equal(back.mask(i), masks[i]) for i in range(2))
    assert back.class_names() == ["background", "class_1", "class_2"]


def test_cvat_colour_masks_with_labelmap(tmp_path):
    colours = {0: (0, 0, 0), 1: (250, 50, 83), 2: (61, 245, 61)}
    (tmp_path / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\nhorse:250,50,83::\nrider:61,245,61::\n"
    )
    masks = _masks(2)
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    for i, img in enumerate(_images(2)):
        Image.fromarray(img).save(tmp_path / "JPEGImages" / f"f{i}.jpg")
        rgb = np.zeros((*masks[i].shape, 3), np.uint8)
        for c, col in colours.items():
            rgb[masks[i] == c] = col
        Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / f"f{i}.png")
    ds = LabeledFolder(tmp_path, size=(24, 32))
    assert ds.n_classes == 3 and ds.names["classes"] == ["background", "horse", "rider"]
    assert np.array_equal(ds[0]["mask"].numpy(), masks[0])
    # the platform's own layout with RGB masks + labelmap.txt reads the same way
    (tmp_path / "own" / "images").mkdir(parents=True)
    (tmp_path / "own" / "masks").mkdir()
    (tmp_path / "own" / "labelmap.txt").write_text((tmp_path / "labelmap.txt").read_text())
    for i in range(2):
        Image.open(tmp_path / "JPEGImages" / f"f{i}.jpg").save(tmp_path / "own" / "images" / f"f{i}.png")
        Image.open(tmp_path / "SegmentationClass" / f"f{i}.png").save(tmp_path / "own" / "masks" / f"f{i}.png")
    own = LabeledFolder(tmp_path / "own")
    assert own.names["classes"] == ["background", "horse", "rider"] and np.array_equal(own[1]["mask"], masks[1])
    # a colour the label map does not list is an error naming it
    bad = np.array(Image.open(tmp_path / "SegmentationClass" / "f1.png"))
    bad[0, 0] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "SegmentationClass" / "f1.png")
    with pytest.raises(DataError, match=r"colour \(1,2,3\) is not in labelmap.txt"):
        LabeledFolder(tmp_path)


def _coco_keypoints(tmp_path):
    (tmp_path / "images").mkdir()
    images, anns = [], []
    kps = [[[4, 5, 2], [10, 6, 1], [0, 0, 0]], [[20, 3, 2], [0, 0, 0], [7, 17, 2]]]
    for i, img in enumerate(_images(2)):
        Image.fromarray(img).save(tmp_path / "images" / f"p{i}.jpg")
        images.append({"id": 10 + i, "file_name": f"p{i}.jpg", "height": 24, "width": 32})
        anns.append(
            {
                "id": i + 1,
                "image_id": 10 + i,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [0, 0, 32, 24],
                "area": 768.0,
                "num_keypoints": 2,
                "keypoints": [v for p in kps[i] for v in p],
            }
        )
    cats = [{"id": 1, "name": "horse", "keypoints": ["nose", "tail", "hoof"], "skeleton": [[1, 2], [2, 3]]}]
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path, np.array(kps, np.float32)


def test_coco_keypoints_with_invisible_points(tmp_path):
    path, kps = _coco_keypoints(tmp_path)
    ls = read_labels(path)
    assert ls.task == "keypoints" and ls.n_keypoints == 3 and ls.ids == ["p0", "p1"]
    assert ls.visible.tolist() == [[True, True, False], [True, False, True]]
    assert ls.keypoint_names() == ["nose", "tail", "hoof"] and ls.names.skeleton == [(0, 1), (1, 2)]
    ds = LabeledFolder(path)  # data.labeled may point at the .json itself
    assert ds.task == "keypoints" and ds.n_keypoints == 3 and ds.names["keypoint_names"] == ["nose", "tail", "hoof"]
    assert ds[1]["visible"].tolist() == [True, False, True]
    assert ds[1]["keypoints"][1].tolist() == [-1.0, -1.0] and ds[1]["keypoints"][2].tolist() == [7.0, 17.0]
    # round trips: COCO (read back with pycocotools' own COCO class) and YOLO pose
    from pycocotools.coco import COCO

    export_dataset(path, "coco", tmp_path / "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    cat = coco.loadCats(coco.getCatIds())[0]
    assert cat["keypoints"] == ["nose", "tail", "hoof"] and cat["skeleton"] == [[1, 2], [2, 3]]
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[2]))[0]
    assert ann["keypoints"] == [20.0, 3.0, 2, 0, 0, 0, 7.0, 17.0, 2] and ann["num_keypoints"] == 2
    for fmt in ("coco", "yolo"):
        if fmt == "yolo":
            export_dataset(path, "yolo", tmp_path / "yolo")
        back = read_labels(tmp_path / fmt)
        assert back.visible.tolist() == ls.visible.tolist() and back.keypoint_names() == ls.keypoint_names()
        assert np.allclose(back.keypoints[back.visible], kps[..., :2][ls.visible], atol=1e-3)
        assert back.names.skeleton == [(0, 1), (1, 2)]


def test_coco_instances_polygons_and_rle_become_class_masks(tmp_path):
    from pycocotools import mask as mask_utils

    (tmp_path / "images").mkdir()
    Image.fromarray(_images(1)[0]).save(tmp_path / "images" / "a.png")
    big = np.zeros((24, 32), np.uint8)
    big[2:20, 2:30] = 1
    rle = mask_utils.encode(np.asfortranarray(big))
    rle["counts"] = rle["counts"].decode()
    anns = [{"id": 1, "image_id": 1, "category_id": 7, "segmentation": rle, "area": float(big.sum()),
             "bbox": [2, 2, 28, 18], "iscrowd": 1},
            {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 16.0, "bbox": [10, 10, 4, 4],
             "segmentation": [[10, 10, 14, 10, 14, 14, 10, 14]]}]  # fmt: skip
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 24, "width": 32}], "annotations": anns,
           "categories": [{"id": 3, "name": "eye"}, {"id": 7, "name": "face"}]}  # fmt: skip
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    assert detect_format(tmp_path) == "coco"
    ds = LabeledFolder(tmp_path)
    m = ds[0]["mask"].numpy()
    assert ds.names["classes"] == ["background", "eye", "face"]
    assert (m[big == 0] == 0).all() and m[12, 12] == 1 and m[5, 5] == 2  # the small object painted on top
    assert (m == 1).sum() == 16 and (m[10:14, 10:14] == 1).all()  # the 4x4 polygon, as pycocotools rasterizes it


def test_segmentation_export_round_trips(tmp_path):
    masks = _masks(3)
    write_labeled_folder(tmp_path / "src", _images(3), "segmentation", masks, ids=["a", "b", "c"])
    (tmp_path / "src" / "labels.json").write_text(json.dumps({"classes": ["background", "box", "disc"]}))
    from pycocotools.coco import COCO

    info = export_dataset(tmp_path / "src", "coco", tmp_path / "coco")
    assert info["n"] == 3 and info["classes"] == ["background", "box", "disc"]
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["box", "disc"]
    for img in coco.loadImgs(coco.getImgIds()):
        i = "abc".index(img["file_name"][0])
        rebuilt = np.zeros((24, 32), np.int64)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            rebuilt[coco.annToMask(a) > 0] = a["category_id"]
        assert np.array_equal(rebuilt, masks[i])
    for fmt in ("coco", "yolo", "voc"):
        if fmt != "coco":
            export_dataset(tmp_path / "src", fmt, tmp_path / fmt)
        back = read_labels(tmp_path / fmt)
        assert back.ids == ["a", "b", "c"] and back.class_names() == ["background", "box", "disc"]
        for i in range(3):  # hole-free regions: exact, YOLO polygons included
            assert np.array_equal(back.mask(i), masks[i]), fmt
        ds = LabeledFolder(tmp_path / fmt)
        assert ds.n_classes == 3 and np.array_equal(ds[2]["mask"].numpy(), masks[2])
    yaml_text = (tmp_path / "yolo" / "data.yaml").read_text()
    assert "0: box" in yaml_text and "1: disc" in yaml_text
    line = (tmp_path / "yolo" / "labels" / "a.txt").read_text().splitlines()[0].split()
    assert line[0] in ("0", "1") and len(line) >= 7 and all(0 <= float(v) <= 1 for v in line[1:])


def test_yolo_polygon_tolerance_with_a_hole(tmp_path):
    m = np.zeros((1, 24, 32), np.uint8)
    m[0, 4:20, 4:28] = 1
    m[0, 8:12, 8:12] = 0  # a hole: YOLO's outer polygons fill it (the stated tolerance)
    m[0, 14:18, 14:18] = 2  # an enclosed region of another class is painted on top
    write_labeled_folder(tmp_path / "src", _images(1), "segmentation", m)
    export_dataset(tmp_path / "src", "yolo", tmp_path / "yolo")
    back = read_labels(tmp_path / "yolo").mask(0)
    diff = back != m[0]
    assert diff.sum() == 16 and (back[8:12, 8:12] == 1).all() and (back[14:18, 14:18] == 2).all()


def test_synthetic_dataset_exports_with_uncertainty_and_names(tmp_path):
    src = tmp_path / "synth"
    masks = _masks(2)
    for i, img in enumerate(_images(2)):
        (src / "images").mkdir(parents=True, exist_ok=True)
        (src / "labels").mkdir(exist_ok=True)
        Image.fromarray(img).save(src / "images" / f"{i:08d}.png")
        Image.fromarray(masks[i]).save(src / "labels" / f"{i:08d}.png")
    (src / "plan.json").write_text(json.dumps({"task": "segmentation", "classes": ["background", "box", "disc"]}))
    (src / "manifest.jsonl").write_text("".join(json.dumps({"id": f"{i:08d}", "uncertainty": 0.1 * (i + 1)}) + "\n"
                                                for i in range(2)))  # fmt: skip
    assert detect_format(src) == "synthetic"
    export_dataset(src, "coco", tmp_path / "coco")
    doc = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["box", "disc"]
    by_image = {a["image_id"]: a["attributes"]["uncertainty"] for a in doc["annotations"]}
    assert by_image == {1: pytest.approx(0.1), 2: pytest.approx(0.2)}
    from autolabel.data.formats import LabelSet
    from autolabel.data.formats.voc import write_voc

    with pytest.raises(DataError, match="format=coco or format=yolo"):
        write_voc(LabelSet("keypoints", ["a"], [src], keypoints=np.zeros((1, 2, 2), np.float32)), tmp_path / "x")
