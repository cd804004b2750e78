"""The downstream comparison on equal terms: mixed-set oversampling, constant baselines (hand-computed answers), the
same optimizer-step budget for every training set, and a keypoint net that beats the mean-shape constant."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import Dataset

from autolabel.config import TrainerConfig
from autolabel.config.downstream import DownstreamConfig
from autolabel.data.labeled import LabeledFolder
from autolabel.data.procedural import make_shapes_dataset
from autolabel.errors import ConfigError, DataError
from autolabel.tasks.augment import PhotometricDataset, RandomAffineDataset, affine_matrix, warp_item
from autolabel.tasks.compare import (
    ConstantModel,
    MixedDataset,
    augment,
    compare_training_sets,
    constant_prediction,
    headline_metrics,
    score,
)
from autolabel.tasks.segmentation import evaluate_segmentation
from autolabel.tasks.segmentation_module import SegmentationModule


class Items(Dataset):
    def __init__(self, items, **attrs):
        self.items = items
        for k, v in attrs.items():
            setattr(self, k, v)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _trainer_cfg(**kw):
    return TrainerConfig(accelerator="cpu", enable_progress_bar=False, log_every_n_steps=1, **kw)


def test_mixed_dataset_oversamples_real_images():
    real = Items([{"i": ("r", i)} for i in range(4)], task="segmentation", n_classes=3)
    synth = Items([{"i": ("s", i)} for i in range(40)])
    mixed = MixedDataset(real, synth, real_share=0.5)
    # 40 synthetic: each of the 4 real images is drawn 10 times, so half of an epoch's draws are real
    assert mixed.repeats == 10 and len(mixed) == 80 and mixed.real_fraction == pytest.approx(0.5)
    draws = [mixed[i]["i"] for i in range(len(mixed))]
    assert sum(d[0] == "r" for d in draws) == 40 and {d for d in draws if d[0] == "r"} == {("r", i) for i in range(4)}
    assert [d for d in draws if d[0] == "s"] == [("s", i) for i in range(40)]  # every synthetic image exactly once
    assert mixed.task == "segmentation" and mixed.n_classes == 3
    quarter = MixedDataset(real, synth, real_share=0.25)  # 1/3 * 40 / 4 = 3.33 -> 3 copies: 12 of 52 draws
    assert quarter.repeats == 3 and quarter.real_fraction == pytest.approx(12 / 52)
    assert MixedDataset(real, Items([{}]), 0.1).repeats == 1  # never fewer than one copy of each real image
    with pytest.raises(ConfigError, match="real_share"):
        MixedDataset(real, synth, 1.0)
    with pytest.raises(DataError, match="non-empty"):
        MixedDataset(real, Items([]), 0.5)


def test_constant_baselines_known_answers():
    masks = [torch.tensor([[0, 1], [1, 2]]), torch.tensor([[0, 1], [0, 2]]), torch.tensor([[1, 1], [0, 255]])]
    seg = Items([{"mask": m} for m in masks], n_classes=3)
    # per pixel: (0,0) votes 0,0,1 -> 0; (0,1) 1,1,1 -> 1; (1,0) 1,0,0 -> 0; (1,1) 2,2,ignored -> 2
    assert constant_prediction(seg, "segmentation").tolist() == [[0, 1], [0, 2]]
    kps = [torch.tensor([[1.0, 2.0], [9.0, 9.0]]), torch.tensor([[3.0, 4.0], [5.0, 1.0]]),
           torch.tensor([[5.0, 0.0], [-1.0, -1.0]])]  # fmt: skip
    vis = [torch.tensor([True, True]), torch.tensor([True, True]), torch.tensor([True, False])]
    kp = Items([{"keypoints": k, "visible": v} for k, v in zip(kps, vis)])
    assert constant_prediction(kp, "keypoints").tolist() == [[3.0, 2.0], [7.0, 5.0]]  # invisible points left out
    depth = Items([{"depth": torch.full((1, 2, 2), 2.0)}, {"depth": torch.tensor([[[4.0, 0.0], [1.0, 2.0]]])}])
    assert constant_prediction(depth, "depth").tolist() == [[[3.0, 1.0], [1.5, 2.0]]]
    none_visible = Items([{"keypoints": torch.zeros(1, 2), "visible": torch.tensor([False])}])
    with pytest.raises(DataError, match="invisible in every labeled image"):
        constant_prediction(none_visible, "keypoints")


def test_constant_model_scores_known_answer():
    cfg = DownstreamConfig()
    const = ConstantModel(torch.tensor([[0, 1], [1, 1]]), "segmentation", n_classes=2)
    test = Items([{"image": torch.zeros(3, 2, 2), "mask": torch.tensor([[0, 0], [1, 1]])}], task="segmentation")
    s = score(const, test, "segmentation", cfg, n_classes=2)
    # confusion (rows gt): [[1, 1], [0, 2]] -> IoU0 = 1/2, IoU1 = 2/3
    assert s["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2) and s["pixel_acc"] == pytest.approx(3 / 4)
    mean_shape = ConstantModel(torch.tensor([[1.0, 1.0], [1.0, 0.0]]), "keypoints")
    kp_test = Items([{"image": torch.zeros(3, 4, 3), "keypoints": torch.tensor([[1.0, 3.0], [1.0, 0.0]]),
                      "visible": torch.tensor([True, True])}], task="keypoints")  # fmt: skip
    k = score(mean_shape, kp_test, "keypoints", cfg)
    # distances 2 and 0; image diagonal 5; the keypoints' box is 0 x 3 (collinear) -> max side 3
    assert k["nme"] == pytest.approx(1 / 5) and k["pck@0.1"] == 0.5 and k["pck@0.05"] == 0.5
    assert k["nme_bbox"] == pytest.approx(1 / 3) and k["pck_bbox@0.1"] == 0.5
    assert headline_metrics("keypoints", {"constant": k}) == {
        "pck@0.1_constant": 0.5, "pck@0.05_constant": 0.5, "nme_constant": pytest.approx(0.2),
        "nme_bbox_constant": pytest.approx(1 / 3)}  # fmt: skip


def test_every_training_set_gets_the_same_number_of_steps(tmp_path, capsys):
    shapes = make_shapes_dataset(tmp_path / "real", 4, size=8, n_classes_shapes=1, seed=0)
    synth = make_shapes_dataset(tmp_path / "synth", 24, size=8, n_classes_shapes=1, seed=1)
    test = make_shapes_dataset(tmp_path / "test", 6, size=8, n_classes_shapes=1, seed=2)
    real, syn, tst = (LabeledFolder(p, task="segmentation", size=8) for p in (shapes, synth, test))
    cfg = DownstreamConfig(steps=5, val_every=2, batch_size=4, base=4, depth=1)
    out = compare_training_sets("segmentation", real, syn, tst, cfg, _trainer_cfg(), tmp_path / "runs")
    m = out["metrics"]
    assert set(m) == {"synthetic", "real_few", "mixed", "finetuned", "constant"}
    # 24 synthetic images are 6 batches per epoch, 4 real ones 1: equal epochs would give 6x the steps
    for name in ("synthetic", "real_few", "mixed"):
        last = torch.load(tmp_path / "runs" / name / "checkpoints" / "last.ckpt", weights_only=False)
        assert m[name]["steps"] == last["global_step"] == 5, name
        assert m[name]["best_step"] in (2, 4) and m[name]["val_images"] == 1 and m[name]["test_images"] == 5
        assert 0.0 <= m[name]["miou"] <= 1.0
        # validations at steps 2 and 4 of 5: a best at 4 may still be improving, and the user is told
        assert m[name]["best_at_end"] == (m[name]["best_step"] == 4), name
    out_text = capsys.readouterr().out
    for name in ("synthetic", "real_few", "mixed", "finetuned"):
        assert f"training set {name}:" in out_text
        assert (f"note: {name} scored best at its last validation" in out_text) == m[name]["best_at_end"], name
    # finetuned: round(5 * 0.5) = 2 steps on the synthetic set, then 3 on the real one -- 5 in all
    ft, runs = m["finetuned"], tmp_path / "runs" / "finetuned"
    pre, tune = (
        torch.load(runs / k / "checkpoints" / "last.ckpt", weights_only=False) for k in ("pretrain", "finetune")
    )
    assert (pre["global_step"], tune["global_step"], ft["steps"], ft["pretrain_steps"]) == (2, 3, 5, 2)
    assert ft["pretrain_best_step"] == 2 and ft["best_step"] in (2 + 2, 2 + 3) and ft["train_images"] == 24 + 4
    assert m["mixed"]["train_images"] == 24 + 4 * 6 and m["mixed"]["real_fraction"] == pytest.approx(0.5)
    assert m["constant"]["train_images"] == 4 and 0.0 <= m["constant"]["miou"] <= 1.0
    assert set(out["headline"]) == {"miou_synthetic", "miou_real_few", "miou_mixed", "miou_finetuned", "miou_constant",
                                    "miou_synthetic_on_labeled"}  # fmt: skip
    assert out["checkpoints"]["synthetic"].name == "best.ckpt"
    # the synthetic-only net (its best checkpoint, the one scored) on the few labeled images; no other set has it
    best = SegmentationModule.load_from_checkpoint(out["checkpoints"]["synthetic"], map_location="cpu")
    own = evaluate_segmentation(best, real, n_classes=2)["miou"]
    assert out["headline"]["miou_synthetic_on_labeled"] == pytest.approx(own) == m["synthetic"]["miou_on_labeled"]
    assert not any("on_labeled" in k for name in ("real_few", "mixed", "finetuned", "constant") for k in m[name])


def test_repeats_train_every_set_on_each_seed_and_report_the_spread(tmp_path, capsys):
    """downstream.repeats=3: each set is trained on seeds 0, 1, 2; its metrics are the mean, <metric>_sd the spread,
    and the seed-1 training is exactly the one a single training with trainer.seed=1 gives."""
    import json
    import statistics

    real, syn, tst = (
        LabeledFolder(make_shapes_dataset(tmp_path / k, n, size=8, n_classes_shapes=1, seed=s), "segmentation", 8)
        for k, n, s in (("real", 4, 0), ("synth", 8, 1), ("test", 6, 2))
    )
    cfg = DownstreamConfig(steps=3, val_every=1, batch_size=4, base=4, depth=1, sets=["synthetic", "real_few"],
                           repeats=3)  # fmt: skip
    out = compare_training_sets("segmentation", real, syn, tst, cfg, _trainer_cfg(), tmp_path / "runs")
    m = out["metrics"]
    json.dumps(m)  # the stage writes it as JSON
    for name in ("synthetic", "real_few"):
        for sub in (name, f"{name}_seed1", f"{name}_seed2"):
            assert torch.load(tmp_path / "runs" / sub / "checkpoints" / "last.ckpt", weights_only=False)[
                "global_step"] == 3, sub  # fmt: skip
        per = m[name]["per_seed"]
        assert [p["seed"] for p in per] == [0, 1, 2] and all(p["best_step"] in (1, 2, 3) for p in per)
        assert len({p["miou"] for p in per}) > 1  # the seeds give different nets
        assert m[name]["miou"] == pytest.approx(statistics.fmean(p["miou"] for p in per))
        assert m[name]["miou_sd"] == pytest.approx(statistics.stdev(p["miou"] for p in per))
        assert out["headline"][f"miou_{name}_sd"] == pytest.approx(m[name]["miou_sd"])
        assert m[name]["steps"] == 3 and "best_step" not in m[name]  # one step of three runs would mean nothing
    assert out["checkpoints"]["real_few"] == tmp_path / "runs" / "real_few" / "checkpoints" / "best.ckpt"
    assert "miou_constant_sd" not in out["headline"]  # the constant has no seed
    assert "real_few: miou" in capsys.readouterr().out
    single = compare_training_sets("segmentation", real, syn, tst, dataclasses.replace(cfg, repeats=1),
                                   _trainer_cfg(seed=1), tmp_path / "single")  # fmt: skip
    for name in ("synthetic", "real_few"):
        assert single["metrics"][name]["miou"] == pytest.approx(m[name]["per_seed"][1]["miou"], abs=1e-6)
    with pytest.raises(ConfigError, match="repeats"):
        DownstreamConfig(repeats=0)


def test_finetuned_set_starts_from_the_pretrained_weights(tmp_path, monkeypatch):
    """The second phase trains on the real images from the first phase's best weights, not from scratch."""
    from autolabel.tasks import compare

    real = LabeledFolder(make_shapes_dataset(tmp_path / "real", 4, size=8, n_classes_shapes=1, seed=0),
                         task="segmentation", size=8)  # fmt: skip
    synth = LabeledFolder(make_shapes_dataset(tmp_path / "synth", 8, size=8, n_classes_shapes=1, seed=1),
                          task="segmentation", size=8)  # fmt: skip
    seen: list[tuple[int, int, torch.Tensor]] = []
    original = compare.train_for_steps

    def spy(module, train, val, task, cfg, trainer_cfg, stage_dir, callbacks=()):
        seen.append((len(train), cfg.steps, next(module.parameters()).detach().clone()))
        out = original(module, train, val, task, cfg, trainer_cfg, stage_dir, callbacks)
        seen.append((-1, -1, next(module.parameters()).detach().clone()))
        return out

    monkeypatch.setattr(compare, "train_for_steps", spy)
    cfg = DownstreamConfig(steps=4, val_every=1, batch_size=4, base=4, depth=1, sets=["finetuned"],
                           pretrain_share=0.75, augment=False)  # fmt: skip
    compare.compare_training_sets("segmentation", real, synth, real, cfg, _trainer_cfg(), tmp_path / "runs")
    (n1, s1, w0), (_, _, w1), (n2, s2, w2), _ = seen
    assert (n1, s1, n2, s2) == (8, 3, 4, 1)  # 3 steps on the 8 synthetic images, 1 on the 4 real ones
    assert not torch.equal(w0, w1) and torch.equal(w1, w2)  # phase 2 starts where phase 1's best left off


@pytest.mark.parametrize("kw", [{"pretrain_share": 0.0}, {"pretrain_share": 1.0}, {"steps": 1}])
def test_finetuned_settings_are_checked(kw):
    with pytest.raises(ConfigError, match="pretrain_share|finetuned set needs"):
        DownstreamConfig(**kw)
    assert DownstreamConfig(steps=1, sets=["real_few"]).steps == 1
    assert DownstreamConfig(steps=3, pretrain_share=0.9).pretrain_steps == 2  # one step is left for the real ones


def test_affine_warp_moves_keypoints_with_the_image():
    img = torch.zeros(1, 9, 9)
    img[0, 2, 3] = 1.0  # a bright pixel at (x=3, y=2)
    item = {"image": img, "keypoints": torch.tensor([[3.0, 2.0], [8.0, 8.0]]), "visible": torch.tensor([True, True]),
            "mask": (img[0] > 0).long()}  # fmt: skip
    out = warp_item(item, affine_matrix((9, 9), 90.0, 1.0, (0.0, 0.0)))  # 90 degrees about the centre (4, 4)
    # (x, y) -> (4 - (y - 4), 4 + (x - 4)) = (6, 3); the corner (8, 8) -> (0, 8)
    assert torch.allclose(out["keypoints"], torch.tensor([[6.0, 3.0], [0.0, 8.0]]), atol=1e-5)
    assert int(out["image"][0].flatten().argmax()) == 3 * 9 + 6 and int(out["mask"][3, 6]) == 1
    shifted = warp_item(item, affine_matrix((9, 9), 0.0, 1.0, (2.0, 0.0)))
    assert shifted["visible"].tolist() == [True, False] and shifted["keypoints"][1].tolist() == [-1.0, -1.0]
    ds = RandomAffineDataset(Items([item]), seed=0)
    assert ds[0]["image"].shape == img.shape and not torch.equal(ds[0]["keypoints"], ds[0]["keypoints"])


def test_photometric_augmentation_changes_the_image_only():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 8, 8, generator=g) * 2 - 1
    item = {"image": img, "mask": (img[0] > 0).long(), "keypoints": torch.tensor([[1.0, 2.0]]),
            "visible": torch.tensor([True])}  # fmt: skip
    ds = PhotometricDataset(Items([item], task="segmentation", n_classes=2), seed=3)
    assert ds.task == "segmentation" and ds.n_classes == 2  # the dataset's facts pass through
    outs = [ds[0] for _ in range(20)]
    for out in outs:
        assert out["image"].shape == img.shape and out["image"].dtype == img.dtype
        assert out["image"].min() >= -1 and out["image"].max() <= 1
        assert torch.equal(out["mask"], item["mask"]) and torch.equal(out["keypoints"], item["keypoints"])
    assert all(not torch.equal(o["image"], img) for o in outs)  # a brightness offset is drawn every time
    assert len({round(float(o["image"].mean()), 4) for o in outs}) > 10  # ... and differs between draws
    again = PhotometricDataset(Items([item]), seed=3)
    assert all(torch.equal(again[0]["image"], o["image"]) for o in outs)  # seeded: the same draws
    # known answers: with every strength 0 it is the identity; brightness alone shifts every pixel by one offset
    assert torch.allclose(PhotometricDataset(Items([item]), 0, 0, 0, 0)[0]["image"], img, atol=1e-6)
    flat = {"image": torch.zeros(3, 4, 4)}
    shifted = PhotometricDataset(Items([flat]), 0, 0, 0.2, 0)[0]["image"]
    assert torch.allclose(shifted, shifted.flatten()[0].expand_as(shifted)) and 0 < shifted.abs().max() <= 0.2
    # blur alone spreads a single bright pixel over its neighbours and leaves pixels 3 away untouched
    dot = torch.full((1, 7, 7), -1.0)
    dot[0, 3, 3] = 1.0
    blurred = PhotometricDataset(Items([{"image": dot}]), 0, 0, 0, blur_p=1.0)[0]["image"]
    assert blurred[0, 3, 3] < 1.0 and blurred[0, 3, 4] > -1.0 and torch.isclose(blurred[0, 0, 0], torch.tensor(-1.0))


@pytest.mark.parametrize("kw", [{"saturation": 1.0}, {"contrast": -0.1}, {"brightness": 2.0}, {"blur_p": 1.5},
                                {"blur_sigma": (0.0, 1.0)}])  # fmt: skip
def test_photometric_settings_are_checked(kw):
    with pytest.raises(ConfigError, match="photometric augmentation"):
        PhotometricDataset(Items([]), **kw)


def test_downstream_augmentation_ends_with_the_photometric_step():
    item = {"image": torch.zeros(3, 8, 8), "mask": torch.zeros(8, 8, dtype=torch.long)}
    assert isinstance(augment(Items([item]), "segmentation"), PhotometricDataset)
    assert not isinstance(augment(Items([item]), "segmentation", photometric=False), PhotometricDataset)
    kp = {"image": torch.zeros(3, 8, 8), "keypoints": torch.tensor([[4.0, 4.0]]), "visible": torch.tensor([True])}
    assert isinstance(augment(Items([kp]), "keypoints"), PhotometricDataset)
    assert DownstreamConfig().photometric is True


def test_keypoint_net_beats_the_mean_shape_on_moving_shapes(tmp_path):
    """The procedural shapes move and change size, so their keypoints (extreme points) move: 16 real labels and
    60 steps must give a net well below the mean shape's error (the old heatmap-MSE net was far above it)."""
    train = make_shapes_dataset(tmp_path / "train", 16, size=16, seed=0)
    test = make_shapes_dataset(tmp_path / "test", 30, size=16, seed=1)
    real, tst = LabeledFolder(train, task="keypoints", size=16), LabeledFolder(test, task="keypoints", size=16)
    cfg = DownstreamConfig(steps=60, val_every=20, batch_size=8, base=8, depth=2, lr=3e-3, sigma=1.0,
                           sets=["real_few"], flip_pairs=[[2, 3]])  # fmt: skip
    m = compare_training_sets("keypoints", real, None, tst, cfg, _trainer_cfg(), tmp_path / "runs")["metrics"]
    net, const = m["real_few"], m["constant"]
    assert net["steps"] == 60
    assert net["nme"] < 0.75 * const["nme"] and net["nme_bbox"] < 0.75 * const["nme_bbox"]
    assert net["pck@0.1"] > const["pck@0.1"] + 0.15
    assert {"pck@0.05", "pck_bbox@0.1", "pck_bbox@0.05"} <= set(net)


def test_synthetic_keypoint_net_is_also_scored_on_the_labeled_images(tmp_path):
    from autolabel.tasks.keypoints import evaluate_keypoints
    from autolabel.tasks.keypoints_module import KeypointModule

    real, syn, tst = (LabeledFolder(make_shapes_dataset(tmp_path / k, n, size=8, seed=s), task="keypoints", size=8)
                      for k, n, s in (("real", 4, 0), ("syn", 8, 1), ("test", 6, 2)))  # fmt: skip
    cfg = DownstreamConfig(steps=4, val_every=2, batch_size=4, base=4, depth=1, sets=["synthetic"])
    out = compare_training_sets("keypoints", real, syn, tst, cfg, _trainer_cfg(), tmp_path / "runs")
    net = KeypointModule.load_from_checkpoint(out["checkpoints"]["synthetic"], map_location="cpu").model
    own = evaluate_keypoints(net, real)
    for m in ("nme", "pck@0.1", "nme_bbox"):
        assert out["headline"][f"{m}_synthetic_on_labeled"] == pytest.approx(own[m]), m


def test_depth_comparison_reports_the_mean_depth_map_baseline(tmp_path):
    from autolabel.data.labeled import FolderSubset, holdout_split
    from autolabel.metrics.dense import depth_errors

    real = LabeledFolder(make_shapes_dataset(tmp_path / "real", 4, size=8, seed=0), task="depth", size=8)
    test = LabeledFolder(make_shapes_dataset(tmp_path / "test", 5, size=8, seed=1), task="depth", size=8)
    cfg = DownstreamConfig(steps=3, val_every=3, batch_size=2, base=4, depth=1, sets=["real_few"])
    out = compare_training_sets("depth", real, None, test, cfg, _trainer_cfg(), tmp_path / "runs")
    m = out["metrics"]
    assert m["real_few"]["steps"] == 3 and set(out["headline"]) == {
        "rmse_real_few", "abs_rel_real_few", "rmse_constant", "abs_rel_constant"}  # fmt: skip
    mean_map = torch.stack([real[i]["depth"] for i in range(4)]).mean(0)
    scored = FolderSubset(test, holdout_split(5, 0.2)[1])
    gt = torch.stack([scored[i]["depth"] for i in range(len(scored))])
    expected = depth_errors(mean_map.expand_as(gt), gt)
    assert m["constant"]["rmse"] == pytest.approx(expected["rmse"]) and m["constant"]["test_images"] == 4
    assert m["constant"]["abs_rel"] == pytest.approx(expected["abs_rel"])
