import json

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.errors import ConfigError, DataError
from autolabel.gan import Generator
from autolabel.handsoff.hypercolumns import HypercolumnExtractor
from autolabel.handsoff.label_generator import LabelGeneratorEnsemble
from autolabel.handsoff.synthesis import filter_indices, filter_plan, merge_manifests, sample_z, synthesize


def setup(task="segmentation", res=8):
    torch.manual_seed(0)
    g = Generator(resolution=8, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32).eval()
    ext = HypercolumnExtractor(g, resolution=res)
    kw = {"n_classes": 3} if task == "segmentation" else {"n_keypoints": 2} if task == "keypoints" else {}
    ens = LabelGeneratorEnsemble(ext.channels, task, n_members=3, hidden=(8, 4), **kw).eval()
    return g, ext, ens


def read_manifest(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_filter_plan_and_indices_known_answer():
    assert filter_plan(2700, 0.1, 30) == {"n": 2700, "n_total": 3000, "drop_least": 30, "drop_most": 270}
    assert filter_plan(5, 0.1, 30) == {"n": 5, "n_total": 6, "drop_least": 0, "drop_most": 1}
    scores = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8]
    # drop 1 least uncertain (idx 1: 0.1) and keep 4 -> 0.2, 0.3, 0.5, 0.7 -> indices 5, 3, 0, 4
    assert filter_indices(scores, 4, 1).tolist() == [0, 3, 4, 5]
    with pytest.raises(DataError, match="generate more"):
        filter_indices(scores, 7, 1)
    with pytest.raises(ConfigError, match="filter_fraction"):
        filter_plan(5, 1.0)


def test_sample_z_is_per_index():
    assert torch.equal(sample_z(0, 3, 8), sample_z(0, 3, 8))
    assert not torch.equal(sample_z(0, 3, 8), sample_z(0, 4, 8))
    assert not torch.equal(sample_z(1, 3, 8), sample_z(0, 3, 8))


def test_synthesize_writes_n_and_is_deterministic(tmp_path):
    g, ext, ens = setup()
    stats = synthesize(g, ens, ext, 4, tmp_path / "a", batch_size=3, filter_fraction=0.3, progress=False)
    man = read_manifest(tmp_path / "a" / "manifest.jsonl")
    assert stats["n_written"] == 4 and len(man) == 4 and stats["n_generated"] == 6
    assert [m["id"] for m in man] == sorted(m["id"] for m in man)
    assert len(list((tmp_path / "a" / "images").glob("*.png"))) == 4
    assert len(list((tmp_path / "a" / "labels").glob("*.png"))) == 4
    lab = np.array(Image.open(tmp_path / "a" / "labels" / f"{man[0]['id']}.png"))
    assert lab.shape == (8, 8) and lab.max() < 3
    assert sum(stats["class_histogram"].values()) == 6 * 64
    # kept = all but the most uncertain 2 (drop_least scales to 0 for 2 drops)
    recs = read_manifest(tmp_path / "a" / "manifest.rank0.jsonl")
    worst = sorted(recs, key=lambda r: r["uncertainty"])[-2:]
    assert not {r["id"] for r in worst} & {m["id"] for m in man}
    synthesize(g, ens, ext, 4, tmp_path / "b", batch_size=2, filter_fraction=0.3, progress=False)
    for m in man:
        for sub in ("images", "labels"):
            assert (tmp_path / "a" / sub / f"{m['id']}.png").read_bytes() == (
                tmp_path / "b" / sub / f"{m['id']}.png"
            ).read_bytes()
    # resume: nothing regenerated
    again = synthesize(g, ens, ext, 4, tmp_path / "a", batch_size=3, filter_fraction=0.3, progress=False)
    assert again["n_generated"] == 0 and again["n_skipped"] == 6 and again["n_written"] == 4
    with pytest.raises(DataError, match="other settings"):
        synthesize(g, ens, ext, 4, tmp_path / "a", seed=1, filter_fraction=0.3, progress=False)


def test_sharded_ranks_match_single_rank(tmp_path):
    g, ext, ens = setup()
    single = tmp_path / "single"
    synthesize(g, ens, ext, 5, single, batch_size=4, filter_fraction=0.3, progress=False)
    sharded = tmp_path / "sharded"
    s0 = synthesize(g, ens, ext, 5, sharded, batch_size=4, filter_fraction=0.3, rank=0, world_size=2, progress=False)
    with pytest.raises(DataError, match="rank 1"):
        merge_manifests(sharded)
    synthesize(g, ens, ext, 5, sharded, batch_size=4, filter_fraction=0.3, rank=1, world_size=2, progress=False)
    r0 = {r["id"] for r in read_manifest(sharded / "manifest.rank0.jsonl")}
    r1 = {r["id"] for r in read_manifest(sharded / "manifest.rank1.jsonl")}
    assert not r0 & r1 and len(r0 | r1) == s0["n_candidates"] + len(r1) == 8
    merged = merge_manifests(sharded)
    assert merged["n_written"] == 5
    ids_sharded = [m["id"] for m in read_manifest(sharded / "manifest.jsonl")]
    ids_single = [m["id"] for m in read_manifest(single / "manifest.jsonl")]
    assert ids_sharded == ids_single


@pytest.mark.parametrize("task,ext_name", [("keypoints", "json"), ("depth", "npy")])
def test_other_tasks_write_labels(tmp_path, task, ext_name):
    g, ext, ens = setup(task)
    synthesize(g, ens, ext, 2, tmp_path, batch_size=2, filter_fraction=0.0, progress=False)
    man = read_manifest(tmp_path / "manifest.jsonl")
    path = tmp_path / "labels" / f"{man[0]['id']}.{ext_name}"
    if task == "keypoints":
        kp = json.loads(path.read_text())["keypoints"]
        assert len(kp) == 2 and all(0 <= k["x"] <= 7 and 0 <= k["y"] <= 7 and "confidence" in k for k in kp)
    else:
        assert np.load(path).shape == (8, 8)
    assert np.load(tmp_path / "uncertainty" / f"{man[0]['id']}.npy").shape == (8, 8)


def test_bad_arguments(tmp_path):
    g, ext, ens = setup()
    with pytest.raises(ConfigError, match="rank"):
        synthesize(g, ens, ext, 2, tmp_path, rank=2, world_size=2, progress=False)
    other = HypercolumnExtractor(g, layers=[0])
    with pytest.raises(ConfigError, match="wide hypercolumns"):
        synthesize(g, ens, other, 2, tmp_path, progress=False)
    with pytest.raises(DataError, match="plan.json"):
        merge_manifests(tmp_path / "nothing")
