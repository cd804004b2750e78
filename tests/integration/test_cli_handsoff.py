"""HandsOff end to end through the CLI on a tiny procedural dataset: GAN -> encoder -> labels -> synthesis."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import threading

import pytest
import torch

from autolabel.data.procedural import make_shapes_dataset
from autolabel.engine.io import read_json
from pipelines.cli import main

GAN = ["gan.resolution=16", "gan.z_dim=32", "gan.w_dim=32", "gan.n_mapping=2", "gan.channel_base=64",
       "gan.channel_max=16", "gan_train.batch_size=4"]  # fmt: skip
COMMON = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("handsoff")
    data = make_shapes_dataset(root / "shapes", 12, size=16, seed=0)
    runs = root / "runs"
    assert main(["fit", "gan", f"images={data / 'images'}", "kimg=0.024", *GAN, *COMMON, f"run.root={runs}"]) == 0
    gen = next((runs / "gan").glob("*/gan/generator.pt"))
    assert main(["fit", "encoder", f"generator={gen}", f"images={data / 'images'}", "encoder.width=8",
                 "encoder.max_width=16", "encoder_train.phase1_steps=3", "encoder_train.finetune_steps=2",
                 "encoder_train.batch_size=4", "lpips_random=true", *COMMON, f"run.root={runs}"]) == 0  # fmt: skip
    enc = next((runs / "encoder").glob("*/encoder/checkpoints/last.ckpt"))
    assert main(["fit", "labels", f"generator={gen}", f"encoder={enc}", f"labeled={data}", "refine_steps=2",
                 "lpips_random=true", "label_generator.n_members=3", "label_generator.hidden=[16,8]",
                 "label_generator.fp16=false", "label_generator.min_class_pixels=2", "label_train.max_steps=4",
                 "label_train.pixels_per_image=64", "label_train.batch_pixels=16", *COMMON,
                 f"run.root={runs}"]) == 0  # fmt: skip
    labels_run = next(p for p in (runs / "labels").iterdir() if p.is_dir())
    return {"root": root, "data": data, "gen": gen, "enc": enc, "labels_run": labels_run,
            "ckpt": labels_run / "labels" / "checkpoints" / "last.ckpt"}  # fmt: skip


def test_training_stages_write_their_artifacts(trained):
    m = read_json(trained["labels_run"] / "labels" / "manifest.json")
    assert m["metrics"]["labeled_images"] == 12
    assert m["metrics"]["hypercolumn_width"] > 0
    # 64 px per forward = one step of 3 members x 16 px (48 px computed); an epoch = 12 x 16^2 / 16 steps
    assert (m["metrics"]["steps"], m["metrics"]["updates_per_forward"], m["metrics"]["pixels_per_forward"]) == (
        4,
        1,
        48,
    )
    assert m["metrics"]["steps_per_epoch"] == 192 and m["metrics"]["n_outputs"] == 5  # background + 4 shapes
    state = torch.load(trained["ckpt"], weights_only=False)["state_dict"]
    assert state and all(k.startswith("ensemble.") for k in state)  # no generator, no latents in the checkpoint
    assert (trained["labels_run"] / "labels" / "inversions.png").is_file()
    assert (trained["labels_run"] / "labels" / "latents.pt").is_file()
    enc_manifest = next((trained["root"] / "runs" / "encoder").glob("*/encoder/manifest.json"))
    assert read_json(enc_manifest)["metrics"]["steps"] == 5  # phase 1 + the capped fine-tuning, then a hard stop
    gan_manifest = next((trained["root"] / "runs" / "gan").glob("*/gan/manifest.json"))
    assert read_json(gan_manifest)["figures"][0].endswith("samples.png")


def test_fit_labels_chooses_its_length_on_held_out_folds(trained, tmp_path, capsys):
    """select_folds=3: three fold ensembles are scored on their held-out images every 2 steps; the final ensemble
    trains the chosen epochs on all 12 images (192 steps per epoch) and the choice is reported and plotted. The folds
    and the final ensemble weight the labeled pixels by the inversion's reconstruction error (recon_weight)."""
    runs = tmp_path / "runs"
    assert main(["fit", "labels", f"generator={trained['gen']}", f"encoder={trained['enc']}",
                 f"labeled={trained['data']}", "lpips_random=true", "label_generator.n_members=3",
                 "label_generator.hidden=[16,8]", "label_generator.fp16=false", "label_generator.min_class_pixels=2",
                 "label_train.max_steps=4", "label_train.pixels_per_image=64", "label_train.batch_pixels=16",
                 "label_train.select_folds=3", "label_train.select_every=2", "label_train.recon_weight=1.0", *COMMON,
                 f"run.root={runs}"]) == 0  # fmt: skip
    stage = next((runs / "labels").glob("*/labels"))
    m = read_json(stage / "manifest.json")["metrics"]
    assert 0.0 < m["recon_weight_mean"] < 1.0  # labeled pixels weighted by how well the inversion reproduced them
    assert str(stage / "recon_weights.png") in read_json(stage / "manifest.json")["figures"]
    curves = [read_json(stage / "select" / f"fold{i}" / "curve.json") for i in range(3)]
    assert all(sorted(c["curve"]) == ["2", "4"] and c["steps_per_epoch"] == 128 for c in curves)  # 8 images each
    assert sorted(sum((c["held_out"] for c in curves), [])) == list(range(12))
    mean = {s: sum(c["curve"][s] for c in curves) / 3 for s in ("2", "4")}
    best = min((s for s in mean if mean[s] == max(mean.values())), key=int)
    assert m["length_epochs"] == pytest.approx(int(best) / 128) and m["length_heldout_score"] == pytest.approx(
        mean[best]
    )
    assert m["steps"] == math.ceil(int(best) / 128 * 192) and m["length_folds"] == 3
    assert (stage / "length_curve.png").is_file()
    assert str(stage / "length_curve.png") in read_json(stage / "manifest.json")["figures"]
    assert "chosen on 3 held-out folds" in capsys.readouterr().out


def test_synthesize_single_and_sharded_agree(trained, tmp_path):
    out1, out2 = tmp_path / "one", tmp_path / "two"
    base = ["synthesize", f"checkpoint={trained['ckpt']}", "n=5", "batch_size=3", "accelerator=cpu", "progress=false"]
    assert main([*base, f"out={out1}"]) == 0
    assert main([*base, f"out={out2}", "devices=2"]) == 0
    rows1 = [json.loads(line) for line in (out1 / "manifest.jsonl").read_text().splitlines()]
    rows2 = [json.loads(line) for line in (out2 / "manifest.jsonl").read_text().splitlines()]
    assert len(rows1) == 5 and [r["id"] for r in rows1] == [r["id"] for r in rows2]
    for out in (out1, out2):  # pictures: label overlays and the uncertainty histogram + maps
        assert (out / "synthetic_overlays.png").stat().st_size > 0 and (out / "uncertainty.png").stat().st_size > 0
    for r in rows1:
        assert (out1 / "images" / f"{r['id']}.png").is_file() and (out1 / "labels" / f"{r['id']}.png").is_file()
    assert (out1 / "images" / f"{rows1[0]['id']}.png").read_bytes() == (
        out2 / "images" / f"{rows1[0]['id']}.png"
    ).read_bytes()
    # rerun: nothing regenerated, same manifest
    assert main([*base, f"out={out1}"]) == 0
    assert [json.loads(line)["id"] for line in (out1 / "manifest.jsonl").read_text().splitlines()] == [
        r["id"] for r in rows1
    ]


def test_launcher_rank_reads_torchrun_and_slurm_variables():
    from autolabel.engine.dist import launcher_rank
    from autolabel.errors import ConfigError

    assert launcher_rank({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    assert launcher_rank({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1"}) == (5, 8, 1)
    assert launcher_rank({"RANK": "0", "WORLD_SIZE": "1"}) is None  # a single process: the normal path
    assert launcher_rank({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) is None  # sbatch script itself, not an srun step
    assert launcher_rank({"WORLD_SIZE": "2", "LOCAL_RANK": "1", "NODE_RANK": "0"}) == (1, 2, 1)  # Lightning's DDP
    assert launcher_rank({"WORLD_SIZE": "4", "LOCAL_RANK": "1", "NODE_RANK": "1", "LOCAL_WORLD_SIZE": "2"}) == (3, 4, 1)
    assert launcher_rank({}) is None
    with pytest.raises(ConfigError, match="RANK=4 outside"):
        launcher_rank({"RANK": "4", "WORLD_SIZE": "2"})
    from pipelines.commands.handsoff import SynthesizeCommand, synthesize_with

    with pytest.raises(ConfigError, match="rank 0 of 2 started by a launcher .* leave devices=1"):
        synthesize_with(SynthesizeCommand(checkpoint="unused.ckpt", devices=2), launched=(0, 2, 0))


def test_synthesize_under_a_launcher_each_rank_writes_its_shard(trained, tmp_path, monkeypatch):
    """torchrun/srun-style ranks (RANK/WORLD_SIZE env vars, no torch.distributed group): each rank synthesizes its
    own shard, rank 0 merges after all finished -- the same dataset as one process writes. Rank 0 runs the CLI with
    the env vars set; rank 1 runs concurrently in a thread (the same code path, its rank passed explicitly)."""
    from pipelines.commands.handsoff import SynthesizeCommand, synthesize_with

    single, ranked = tmp_path / "single", tmp_path / "ranked"
    base = ["synthesize", f"checkpoint={trained['ckpt']}", "n=5", "batch_size=3", "accelerator=cpu", "progress=false",
            "wait_timeout_s=120"]  # fmt: skip
    assert main([*base, f"out={single}"]) == 0
    for var in ("MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(var, raising=False)
    cmd = SynthesizeCommand(checkpoint=str(trained["ckpt"]), n=5, batch_size=3, accelerator="cpu", progress=False,
                            out=str(ranked), wait_timeout_s=120)  # fmt: skip
    rank1: dict = {}
    worker = threading.Thread(target=lambda: rank1.update(synthesize_with(cmd, launched=(1, 2, 1))))
    worker.start()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main([*base, f"out={ranked}"]) == 0  # rank 0: its shard, waits for rank 1's, merges
    worker.join(timeout=120)
    assert not worker.is_alive() and (rank1["rank"], rank1["world_size"], rank1["n_written"]) == (1, 2, 5)
    plan = read_json(ranked / "plan.json")
    assert plan["world_size"] == 2 and plan["label_checkpoint"]["path"] == str(trained["ckpt"].resolve())
    recs = [
        [json.loads(line) for line in (ranked / f"manifest.rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
    ]
    assert {r["rank"] for r in recs[0]} == {0} and {r["rank"] for r in recs[1]} == {1}  # each rank made its own half
    assert len(recs[0]) + len(recs[1]) == read_json(single / "plan.json")["n_total"]
    kept = [json.loads(line)["id"] for line in (single / "manifest.jsonl").read_text().splitlines()]
    assert [json.loads(line)["id"] for line in (ranked / "manifest.jsonl").read_text().splitlines()] == kept
    for sid in kept:
        for sub, ext in (("images", "png"), ("labels", "png"), ("uncertainty", "npy")):
            assert (ranked / sub / f"{sid}.{ext}").read_bytes() == (single / sub / f"{sid}.{ext}").read_bytes()
    assert len(list((ranked / "images").glob("*.png"))) == 5  # rank 0's merge dropped the filtered candidates
    assert (ranked / "synthetic_overlays.png").is_file()  # rank 0 drew the figures


def test_synthesis_refuses_a_folder_made_by_another_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "synth"
    base = ["synthesize", "n=2", f"out={out}", "accelerator=cpu", "progress=false"]
    assert main([*base, f"checkpoint={trained['ckpt']}"]) == 0
    state = torch.load(trained["ckpt"], weights_only=False)
    state["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    other = tmp_path / "other.ckpt"
    torch.save(state, other)
    capsys.readouterr()
    assert main([*base, f"checkpoint={other}"]) == 2
    err = capsys.readouterr().err
    assert "holds candidates of another label generator" in err and "use a new out= or delete" in err


def test_downstream_segmentation_on_synthetic_and_real(trained, tmp_path):
    from autolabel.config.downstream import SegmentationNetConfig
    from autolabel.data.labeled import FolderSubset, LabeledFolder, holdout_split
    from autolabel.tasks.segmentation import evaluate_segmentation
    from autolabel.tasks.segmentation_module import SegmentationModule

    synth = tmp_path / "synth"
    assert main(["synthesize", f"checkpoint={trained['ckpt']}", "n=4", f"out={synth}", "accelerator=cpu",
                 "progress=false"]) == 0  # fmt: skip
    fg_train = make_shapes_dataset(tmp_path / "fg_train", 24, size=16, seed=0, n_classes_shapes=1)  # figure/ground
    fg_test = make_shapes_dataset(tmp_path / "fg_test", 10, size=16, seed=1, n_classes_shapes=1)
    seg = ["fit", "segmentation", "size=16", "base=4", "depth=2", "batch_size=4", "lr=1e-2", *COMMON,
           f"run.root={tmp_path / 'seg'}", "run.resume=never"]  # fmt: skip
    assert main([*seg, f"train={synth}", f"test={trained['data']}", "max_epochs=1"]) == 0
    # 48 steps of a 4-channel net: without the colour jitter (it slows a run this short: mIoU 0.53 with it)
    assert main([*seg, f"train={fg_train}", f"test={fg_test}", "max_epochs=8", "photometric=false"]) == 0
    runs = sorted(p for p in (tmp_path / "seg" / "segmentation").iterdir() if p.is_dir())
    assert read_json(runs[0] / "summary.json")["train_images"] == 4
    real = read_json(runs[-1] / "summary.json")
    # the test folder is split: 20% (2 of 10) picks the epoch, the other 8 are scored
    assert (real["test_images"], real["val_images"], real["train_images"]) == (8, 2, 24)
    man = read_json(runs[-1] / "segmentation" / "manifest.json")
    assert man["outputs"]["checkpoint"].endswith("best.ckpt")
    scored = FolderSubset(LabeledFolder(fg_test, task="segmentation", size=16), holdout_split(10, 0.2)[1])
    best = SegmentationModule.load_from_checkpoint(man["outputs"]["checkpoint"], map_location="cpu")
    assert evaluate_segmentation(best, scored)["miou"] == pytest.approx(real["miou"], rel=1e-6)  # the scored model
    untrained = []
    for seed in range(3):
        torch.manual_seed(seed)
        untrained.append(
            evaluate_segmentation(SegmentationModule(SegmentationNetConfig(base=4, depth=2), n_classes=2), scored)[
                "miou"
            ]
        )
    assert real["miou"] > 0.6 and real["iou_class1"] > 0.4  # the shapes are found, not just the background
    assert real["miou"] > max(untrained) + 0.2


def test_fit_labels_checks_class_and_keypoint_counts(trained, tmp_path, capsys):
    base = ["fit", "labels", f"generator={trained['gen']}", f"encoder={trained['enc']}", f"labeled={trained['data']}",
            *COMMON, f"run.root={tmp_path}"]  # fmt: skip
    assert main([*base, "label_generator.n_classes=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(r"class index [34] >= n_classes=3 -- raise n_classes", err) and "\n" not in err
    assert main([*base, "label_generator.task=keypoints", "label_generator.n_keypoints=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "label_generator.n_keypoints=3 but" in err and "set label_generator.n_keypoints=4" in err


def test_keypoint_labels_end_to_end(trained, tmp_path):
    runs = tmp_path / "runs"
    assert main(["fit", "labels", f"generator={trained['gen']}", f"encoder={trained['enc']}",
                 f"labeled={trained['data']}", "label_generator.task=keypoints",  # n_keypoints: counted (4)
                 "label_generator.n_members=2", "label_generator.hidden=[8,4]", "label_generator.fp16=false",
                 "label_generator.working_resolution=8", "label_train.max_steps=3", "label_train.pixels_per_image=32",
                 "label_train.batch_pixels=8", *COMMON, f"run.root={runs}"]) == 0  # fmt: skip
    ckpt = next(runs.glob("labels/*/labels/checkpoints/last.ckpt"))
    out = tmp_path / "kp"
    assert main(["synthesize", f"checkpoint={ckpt}", "n=2", f"out={out}", "accelerator=cpu", "progress=false"]) == 0
    sid = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["id"]
    lab = json.loads((out / "labels" / f"{sid}.json").read_text())
    assert (lab["resolution"], lab["working_resolution"], len(lab["keypoints"])) == (16, 8, 4)  # image pixels
    assert all(0 <= k["x"] <= 15 and 0 <= k["y"] <= 15 for k in lab["keypoints"])
    plan = json.loads((out / "plan.json").read_text())  # keypoint names + skeleton of the labeled folder's labels.json
    assert plan["keypoint_names"] == ["top", "bottom", "left", "right"] and len(plan["skeleton"]) == 4
    if importlib.util.find_spec("pycocotools") is not None:
        assert main(["export", f"src={out}", "format=coco", f"out={tmp_path / 'coco'}"]) == 0
        cat = json.loads((tmp_path / "coco" / "annotations.json").read_text())["categories"][0]
        assert cat["keypoints"] == plan["keypoint_names"] and cat["skeleton"][0] == [1, 4]


def test_labels_and_names_survive_import_synthesize_export(trained, tmp_path):
    pytest.importorskip("pycocotools")
    pytest.importorskip("cv2")
    import numpy as np
    from PIL import Image

    from autolabel.data.formats import export_dataset, read_labels

    export_dataset(
        trained["data"], "coco", tmp_path / "in", task="segmentation"
    )  # the shapes' labels as a COCO file (the import side)
    runs = tmp_path / "runs"
    assert main(["fit", "labels", f"generator={trained['gen']}", f"encoder={trained['enc']}",
                 f"labeled={tmp_path / 'in' / 'annotations.json'}", "label_generator.n_members=2",
                 "label_generator.hidden=[8,4]", "label_generator.fp16=false", "label_generator.min_class_pixels=2",
                 "label_train.max_steps=3", "label_train.pixels_per_image=64", "label_train.batch_pixels=16",
                 *COMMON, f"run.root={runs}"]) == 0  # fmt: skip
    ckpt = next(runs.glob("labels/*/labels/checkpoints/last.ckpt"))
    synth = tmp_path / "synth"
    assert main(["synthesize", f"checkpoint={ckpt}", "n=3", f"out={synth}", "accelerator=cpu", "progress=false"]) == 0
    names = ["background", "ellipse", "rectangle", "triangle", "star"]
    assert json.loads((synth / "plan.json").read_text())["classes"] == names
    rows = [json.loads(line) for line in (synth / "manifest.jsonl").read_text().splitlines()]
    masks = [np.array(Image.open(synth / "labels" / f"{r['id']}.png")) for r in rows]
    for r, m in zip(rows, masks):
        assert r["classes"] == [names[c] for c in np.unique(m)]
    for fmt in ("coco", "yolo", "voc"):
        assert main(["export", f"src={synth}", f"format={fmt}", f"out={tmp_path / fmt}"]) == 0
        back = read_labels(tmp_path / fmt)
        assert back.class_names() == names and back.ids == [r["id"] for r in rows]
        for i, m in enumerate(masks):
            agree = (back.mask(i) == m).mean()
            assert agree == 1.0 if fmt != "yolo" else agree >= 0.9, (fmt, agree)  # YOLO: outer polygons only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synthesize", "checkpoint=/nope.ckpt"], "label-generator checkpoint not found"),
        (["fit", "encoder", "generator=/nope.pt", "images=/tmp"], "not found"),
        (["weights", "lpips", "src=/nope.tar.gz"], "nope.tar.gz"),
        (["synthesize", "checkpoint=x", "n=0"], "must be >= 1"),
        (["synthesize", "checkpoint=x", "noise_mode=fixed"], "noise_mode='fixed' unknown: use random"),
    ],
)
def test_handsoff_bad_input(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_training_device_follows_the_trainer_config(monkeypatch):
    from autolabel.config import TrainerConfig
    from autolabel.engine.dist import training_device

    assert training_device(TrainerConfig(accelerator="cpu")).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training_device(TrainerConfig(accelerator="auto")) == torch.device("cuda", 1)
    assert training_device(TrainerConfig(accelerator="gpu", devices=[2, 3])) == torch.device("cuda", 3)
    assert training_device(TrainerConfig(accelerator="cpu")).type == "cpu"


def test_resumed_labels_stage_reuses_its_latents(trained, tmp_path):
    """An interrupted `fit labels` resumes from last.ckpt on the W+ codes it saved (no re-inversion, so no drift)."""
    from autolabel.config import TrainerConfig
    from autolabel.config.labelgen import LabelGeneratorConfig, LabelTrainConfig
    from pipelines.commands.handsoff import FitLabelsCommand, train_labels

    stage = tmp_path / "labels"
    shutil.copytree(trained["labels_run"] / "labels", stage)
    before = read_json(stage / "manifest.json")["metrics"]
    cfg = FitLabelsCommand(
        generator=str(trained["gen"]), encoder=str(tmp_path / "no_encoder.ckpt"), labeled=str(trained["data"]),
        label_generator=LabelGeneratorConfig(n_members=3, hidden=[16, 8], fp16=False, min_class_pixels=2),
        label_train=LabelTrainConfig(max_steps=6, pixels_per_image=64, batch_pixels=16),
        trainer=TrainerConfig(accelerator="cpu", enable_progress_bar=False),
    )  # fmt: skip
    out = train_labels(cfg, stage, progress=False)  # the encoder path does not exist: it is not needed
    assert out["metrics"]["steps"] == 6 and out["metrics"]["inversion_mse"] == before["inversion_mse"]
    assert torch.load(stage / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
