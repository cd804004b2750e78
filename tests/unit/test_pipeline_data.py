"""Your own data in the pipelines (data.source=folders / data.root): what is checked before any work, and what the data
stage hands the later stages."""

from __future__ import annotations

import shutil

import pytest

from autolabel.config import load_config, to_object
from autolabel.data.procedural import make_shapes_dataset
from autolabel.engine.rundir import RunDir
from autolabel.errors import AutolabelError
from pipelines.definitions import PipelineConfig, get_pipeline
from pipelines.runner import StageContext
from pipelines.stages.data import stage_handsoff_data


def _cfg(*overrides: str) -> PipelineConfig:
    return to_object(load_config(PipelineConfig, overrides=list(overrides)))


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A dataset folder in the data.root layout: images/, labeled/, test/, train/<class>/, pool/<class>/."""
    root = tmp_path_factory.mktemp("faces")
    src = make_shapes_dataset(root / "_src", 24, size=8, seed=0)
    shutil.copytree(src / "images", root / "images")
    make_shapes_dataset(root / "labeled", 4, size=8, seed=1)
    make_shapes_dataset(root / "test", 5, size=8, seed=2)
    for name, cats in (("train", ["00", "01", "02"]), ("pool", ["03", "04"])):
        for c in cats:
            shutil.copytree(src / "unlabeled" / c, root / name / c)
    return root


def _data_stage(cfg: PipelineConfig, tmp_path) -> dict:
    get_pipeline(cfg.pipeline).validate(cfg)
    sdir = tmp_path / "data"
    sdir.mkdir(exist_ok=True)
    return stage_handsoff_data(StageContext(cfg, RunDir(tmp_path), sdir, {}))


def test_root_layout_feeds_both_halves(faces, tmp_path):
    out = _data_stage(_cfg(f"data.root={faces}"), tmp_path)
    o = out["outputs"]
    assert o["images"] == faces / "images" and o["labeled"] == faces / "labeled" and o["test"] == faces / "test"
    assert o["train_dir"] == o["meta_dir"] == faces / "train" and o["pool_dir"] == faces / "pool"
    assert out["metrics"] == {"pool_images": 24, "labeled_images": 4, "test_images": 5}


def test_optional_folders_default_sensibly(faces, tmp_path):
    """No test/ -> no downstream scoring; no pool/ -> the unlabeled images are clustered."""
    out = _data_stage(_cfg("pipeline=handsoff", "data.source=folders", f"data.images={faces / 'images'}",
                           f"data.labeled={faces / 'labeled'}"), tmp_path)  # fmt: skip
    assert "test" not in out["outputs"] and out["outputs"]["pool_dir"] == faces / "images"


def test_separate_masks_subset_and_test_split(tmp_path):
    """Weizmann-style rgb/ + figure_ground/: the first n_labeled label the GAN, the rest is the test set."""
    src = make_shapes_dataset(tmp_path / "src", 7, size=8, seed=0)
    shutil.copytree(src / "images", tmp_path / "rgb")
    shutil.copytree(src / "masks", tmp_path / "figure_ground")
    cfg = _cfg("pipeline=handsoff", "data.source=folders", f"data.images={tmp_path / 'rgb'}",
               f"data.labeled={tmp_path / 'rgb'}", f"data.labeled_masks={tmp_path / 'figure_ground'}",
               "data.n_labeled=3", f"data.test={tmp_path / 'rgb'}",
               f"data.test_masks={tmp_path / 'figure_ground'}")  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    out = _data_stage(cfg, run)
    lab, test = out["outputs"]["labeled"], out["outputs"]["test"]
    names = sorted(p.name for p in (src / "images").iterdir())
    assert (
        sorted(p.name for p in (lab / "images").iterdir())
        == names[:3]
        == sorted(p.name for p in (lab / "masks").iterdir())
    )
    assert sorted(p.name for p in (test / "images").iterdir()) == names[3:]  # no labeled image is scored on
    assert out["metrics"]["labeled_images"] == 3 and out["metrics"]["test_images"] == 4


@pytest.mark.parametrize(
    ("setup", "overrides", "message"),
    [
        (None, ["pipeline=handsoff", "data.source=digits"], "pipeline=hilander only"),
        (None, ["pipeline=hilander", "data.source=procedural"], "pipeline=hilander takes"),
        (None, ["data.source=folders"], "data.images=DIR"),
        ("no_masks", ["pipeline=handsoff"], "has no masks for labels.model.task=segmentation"),
        ("one_class", [], "data.train_dir=.* has 1 class subfolder"),
        ("no_train", [], "set data.train_dir=DIR"),
        ("many", ["pipeline=handsoff"], "holds 51 labeled images; HandsOff is built for <= 50: set data.n_labeled"),
        ("empty_images", ["pipeline=handsoff"], "data.images=.*no images"),
    ],
)
def test_bad_folders_fail_before_any_work(faces, tmp_path, setup, overrides, message):
    root = tmp_path / "root"
    if setup is not None:
        shutil.copytree(faces, root, ignore=shutil.ignore_patterns("_src"))
        if setup == "no_masks":
            shutil.rmtree(root / "labeled" / "masks")
        elif setup == "one_class":
            for c in ("01", "02"):
                shutil.rmtree(root / "train" / c)
        elif setup == "no_train":
            shutil.rmtree(root / "train")
        elif setup == "many":
            shutil.rmtree(root / "labeled")
            make_shapes_dataset(root / "labeled", 51, size=8, seed=5)
        elif setup == "empty_images":
            shutil.rmtree(root / "images")
            (root / "images").mkdir()
        overrides = [f"data.root={root}", *overrides]
    with pytest.raises(AutolabelError, match=message):
        cfg = _cfg(*overrides)
        get_pipeline(cfg.pipeline).validate(cfg)


def test_headline_shows_each_task_own_metrics():
    from types import SimpleNamespace

    from pipelines.definitions import headline

    kp = SimpleNamespace(manifest={"metrics": {"pck@0.1_synthetic": 0.6, "pck@0.1_real_few": 0.5, "nme_synthetic": 0.1,
                                               "nme_real_few": 0.2, "nme_synthetic_on_labeled": 0.05,
                                               "downstream": {}}})  # fmt: skip
    depth = SimpleNamespace(manifest={"metrics": {"rmse_synthetic": 1.5, "abs_rel_real_few": 0.3}})
    assert headline([kp]) == {"pck@0.1_synthetic": 0.6, "pck@0.1_real_few": 0.5, "nme_synthetic": 0.1,
                              "nme_real_few": 0.2, "nme_synthetic_on_labeled": 0.05}  # fmt: skip
    assert headline([depth]) == {"rmse_synthetic": 1.5, "abs_rel_real_few": 0.3}


def test_imported_formats_feed_the_data_stage(tmp_path):
    """data.labeled = data.test = a COCO file: the first n_labeled become a labeled folder (names kept), the rest the
    test folder; no labeled image is scored on."""
    pytest.importorskip("pycocotools")
    from autolabel.data.formats import export_dataset
    from autolabel.data.labeled import LabeledFolder

    src = make_shapes_dataset(tmp_path / "src", 7, size=8, seed=0)
    export_dataset(src, "coco", tmp_path / "coco", task="segmentation")
    ann = tmp_path / "coco" / "annotations.json"
    cfg = _cfg("pipeline=handsoff", "data.source=folders", f"data.images={src / 'images'}", f"data.labeled={ann}",
               "data.n_labeled=3", f"data.test={ann}")  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    out = _data_stage(cfg, run)
    lab, test = LabeledFolder(out["outputs"]["labeled"]), LabeledFolder(out["outputs"]["test"])
    names = sorted(p.stem for p in (src / "images").iterdir())
    assert lab.ids == names[:3] and test.ids == names[3:]
    assert lab.names["classes"] == ["background", "ellipse", "rectangle", "triangle", "star"]
    ref = LabeledFolder(src, task="segmentation")
    assert all((lab[i]["mask"] == ref[i]["mask"]).all() for i in range(3))
    assert out["metrics"]["labeled_images"] == 3 and out["metrics"]["test_images"] == 4
