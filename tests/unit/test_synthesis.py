import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from autolabel.errors import ConfigError, DataError
from autolabel.gan import Generator
from autolabel.handsoff.hypercolumns import HypercolumnExtractor
from autolabel.handsoff.label_generator import LabelGeneratorEnsemble, decode_keypoints
from autolabel.handsoff.synthesis import (
    filter_indices,
    filter_plan,
    fingerprint,
    merge_manifests,
    sample_noise,
    sample_z,
    synthesize,
)


def setup(task="segmentation", res=8):
    torch.manual_seed(0)
    g = Generator(resolution=8, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32).eval()
    ext = HypercolumnExtractor(g, resolution=res)
    kw = {"n_classes": 3} if task == "segmentation" else {"n_keypoints": 2} if task == "keypoints" else {}
    ens = LabelGeneratorEnsemble(ext.channels, task, n_members=3, hidden=(8, 4), **kw).eval()
    return g, ext, ens


def noisy_setup():
    """setup() with the generator's noise inputs switched on (a new StyleGAN2 starts with zero noise strengths)."""
    from autolabel.gan.stylegan2 import NoiseInjection

    g, ext, ens = setup()
    for m in g.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.5)
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


def test_sample_noise_is_per_index_and_feeds_the_generator():
    g, _, _ = noisy_setup()
    shapes = g.noise_shapes
    assert shapes == [(4, 4), (8, 8), (8, 8)]  # conv1 at 4 px, then two convs at 8 px
    a, b = sample_noise(0, 3, shapes), sample_noise(0, 4, shapes)
    assert [tuple(t.shape) for t in a] == [(1, 4, 4), (1, 8, 8), (1, 8, 8)]
    assert all(torch.equal(x, y) for x, y in zip(a, sample_noise(0, 3, shapes)))
    assert not torch.equal(a[1], b[1]) and not torch.equal(a[1], sample_noise(1, 3, shapes)[1])
    ws = torch.randn(2, g.num_ws, g.w_dim)
    with torch.no_grad():  # the generator's own buffers given explicitly == noise_mode const
        buffers = [getattr(g.noises, f"noise_{i}").expand(2, -1, -1, -1) for i in range(g.num_layers)]
        assert torch.equal(g.synthesis(ws, noise=buffers), g.synthesis(ws, noise_mode="const"))
        mine = [torch.stack([x, y]) for x, y in zip(a, b)]  # per layer: sample 3, then sample 4
        assert not torch.allclose(g.synthesis(ws, noise=mine), g.synthesis(ws, noise_mode="const"))
    with pytest.raises(DataError, match=r"expected \[\(2, 1, 4, 4\)"):
        g.synthesis(ws, noise=mine[:2])


def test_synthesize_noise_modes(tmp_path):
    """random (the default): each sample's noise comes from its own seed, so its image does not depend on the batch
    it was drawn in, and differs from the const-noise image of the same latent; the mode is part of the plan."""
    g, ext, ens = noisy_setup()
    kw = {"filter_fraction": 0.0, "progress": False}
    synthesize(g, ens, ext, 3, tmp_path / "r3", batch_size=3, **kw)
    synthesize(g, ens, ext, 3, tmp_path / "r1", batch_size=1, **kw)
    synthesize(g, ens, ext, 3, tmp_path / "c", batch_size=3, noise_mode="const", **kw)
    ids = [m["id"] for m in read_manifest(tmp_path / "r3" / "manifest.jsonl")]
    for sid in ids:
        img = (tmp_path / "r3" / "images" / f"{sid}.png").read_bytes()
        assert img == (tmp_path / "r1" / "images" / f"{sid}.png").read_bytes()
        assert img != (tmp_path / "c" / "images" / f"{sid}.png").read_bytes()
    assert json.loads((tmp_path / "r3" / "plan.json").read_text())["noise_mode"] == "random"
    assert "noise_mode" not in json.loads((tmp_path / "c" / "plan.json").read_text())  # older folders still resume
    with pytest.raises(DataError, match="other settings"):
        synthesize(g, ens, ext, 3, tmp_path / "r3", noise_mode="const", **kw)
    with pytest.raises(ConfigError, match="noise_mode='fixed' unknown"):
        synthesize(g, ens, ext, 3, tmp_path / "x", noise_mode="fixed", **kw)


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


class _CoordExtractor:
    """Stand-in extractor whose hypercolumns are each pixel's (x, y) on the working grid."""

    channels = 2

    def __init__(self, generator, resolution):
        self.generator, self.resolution = generator, resolution

    def features(self, ws, noise=None):
        with torch.no_grad():
            return self.generator.synthesis(ws, noise=noise), [ws.new_zeros(ws.shape[0], 1, 1, 1)]

    def gather(self, feats, index):
        r = self.resolution
        index = index[None].expand(feats[0].shape[0], -1) if index.ndim == 1 else index
        return torch.stack([index % r, index // r], -1).float()


class _KnownMember(nn.Module):
    """Outputs a known function of the pixel position: class (x >= 2), a Gaussian peak at (1, 2), or depth = x."""

    def __init__(self, task):
        super().__init__()
        self.task = task
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, xy):
        x, y = xy[:, 0], xy[:, 1]
        if self.task == "segmentation":
            return torch.stack([torch.zeros_like(x), (x - 1.5) * self.scale], -1)
        if self.task == "keypoints":
            return torch.exp(-((x - 1.0) ** 2 + (y - 2.0) ** 2) / 2)[:, None] * self.scale / 10
        return x[:, None] * self.scale / 10


def _known(task):
    torch.manual_seed(0)
    g = Generator(resolution=8, z_dim=32, w_dim=32, n_mapping=2, channel_base=64, channel_max=32).eval()
    kw = {"n_classes": 2} if task == "segmentation" else {"n_keypoints": 1} if task == "keypoints" else {}
    ens = LabelGeneratorEnsemble(2, task, n_members=1, hidden=(4, 4), **kw)
    ens.members = nn.ModuleList([_KnownMember(task)])
    return g, _CoordExtractor(g, 4), ens.eval()


@pytest.mark.parametrize("task", ["segmentation", "keypoints", "depth"])
def test_labels_are_written_at_the_image_resolution(tmp_path, task):
    g, ext, ens = _known(task)  # images 8 px, ensemble on a 4 px working grid
    synthesize(g, ens, ext, 2, tmp_path, batch_size=2, filter_fraction=0.0, progress=False)
    sid = read_manifest(tmp_path / "manifest.jsonl")[0]["id"]
    assert np.asarray(Image.open(tmp_path / "images" / f"{sid}.png")).shape[:2] == (8, 8)
    if task == "segmentation":
        mask = np.asarray(Image.open(tmp_path / "labels" / f"{sid}.png"))
        expected = np.broadcast_to((np.arange(8) >= 4).astype(np.uint8), (8, 8))  # working column x -> 2x, 2x+1
        assert mask.shape == (8, 8) and np.array_equal(mask, expected)
    elif task == "keypoints":
        lab = json.loads((tmp_path / "labels" / f"{sid}.json").read_text())
        assert lab["resolution"] == 8 and lab["working_resolution"] == 4
        kp = lab["keypoints"][0]
        # peak at (1, 2) on the 4 px grid = ((1 + .5) * 2 - .5, (2 + .5) * 2 - .5) in image pixels
        assert (kp["x"], kp["y"]) == pytest.approx((2.5, 4.5), abs=1e-4) and kp["confidence"] == pytest.approx(1.0)
    else:
        depth = np.load(tmp_path / "labels" / f"{sid}.npy")
        row = [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]  # bilinear (align_corners=False) of x = 0, 1, 2, 3
        assert depth.shape == (8, 8) and np.allclose(depth, np.broadcast_to(row, (8, 8)), atol=1e-6)
    assert np.load(tmp_path / "uncertainty" / f"{sid}.npy").shape == (8, 8)


@pytest.mark.parametrize("task,ext_name", [("keypoints", "json"), ("depth", "npy")])
def test_other_tasks_write_labels(tmp_path, task, ext_name):
    g, ext, ens = setup(task)
    synthesize(g, ens, ext, 2, tmp_path, batch_size=2, filter_fraction=0.0, progress=False)
    man = read_manifest(tmp_path / "manifest.jsonl")
    path = tmp_path / "labels" / f"{man[0]['id']}.{ext_name}"
    z = sample_z(0, int(man[0]["id"]), g.z_dim)[None]
    with torch.no_grad():
        _, feats = ext.features(g.mapping(z, truncation_psi=0.7)[:, None].repeat(1, g.num_ws, 1))
        pred = ens.predict(ext.gather(feats, torch.arange(64))[0])  # the ensemble on every pixel of that sample
    if task == "keypoints":
        lab = json.loads(path.read_text())
        heat = pred["heatmap"].T.reshape(1, 2, 8, 8)
        coords, conf = decode_keypoints(heat)
        got = [[k["x"], k["y"]] for k in lab["keypoints"]]
        assert lab["resolution"] == 8 and np.allclose(got, coords[0].numpy(), atol=1e-5)  # the decoded peaks
        assert [k["confidence"] for k in lab["keypoints"]] == pytest.approx(conf[0].tolist(), abs=1e-5)
    else:
        assert np.allclose(np.load(path), pred["depth"].reshape(8, 8).numpy(), atol=1e-5)
    assert np.load(tmp_path / "uncertainty" / f"{man[0]['id']}.npy").shape == (8, 8)


def test_plan_records_the_label_generator_and_refuses_another(tmp_path):
    g, ext, ens = setup()
    ckpt = tmp_path / "labels.ckpt"
    ckpt.write_bytes(b"stand-in checkpoint")
    out = tmp_path / "out"
    synthesize(g, ens, ext, 2, out, filter_fraction=0.0, progress=False, label_checkpoint=ckpt)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["label_generator"] == fingerprint(ens) and plan["generator"] == fingerprint(g)
    assert plan["label_checkpoint"] == {"path": str(ckpt.resolve()), "size": 19, "mtime_ns": ckpt.stat().st_mtime_ns}
    again = synthesize(g, ens, ext, 2, out, filter_fraction=0.0, progress=False)  # same weights: resumes
    assert again["n_generated"] == 0 and again["n_written"] == 2
    other = LabelGeneratorEnsemble(ext.channels, "segmentation", n_classes=3, n_members=3, hidden=(8, 4)).eval()
    with pytest.raises(DataError, match="another label generator .* use a new out= or delete"):
        synthesize(g, other, ext, 2, out, filter_fraction=0.0, progress=False)
    assert fingerprint(ens) != fingerprint(other)
    assert fingerprint(ens) == fingerprint(copy.deepcopy(ens).double().float())  # a function of the values


def test_bad_arguments(tmp_path):
    g, ext, ens = setup()
    with pytest.raises(ConfigError, match="rank"):
        synthesize(g, ens, ext, 2, tmp_path, rank=2, world_size=2, progress=False)
    other = HypercolumnExtractor(g, layers=[0])
    with pytest.raises(ConfigError, match="wide hypercolumns"):
        synthesize(g, ens, other, 2, tmp_path, progress=False)
    with pytest.raises(DataError, match="plan.json"):
        merge_manifests(tmp_path / "nothing")


def test_names_flow_into_plan_manifest_and_exports(tmp_path):
    pytest.importorskip("pycocotools")
    from autolabel.data.formats import export_dataset, read_labels

    g, ext, ens = setup()
    names = {"classes": ["background", "body", "head"]}
    synthesize(g, ens, ext, 3, tmp_path / "s", batch_size=4, filter_fraction=0.25, progress=False, names=names)
    plan = json.loads((tmp_path / "s" / "plan.json").read_text())
    assert plan["classes"] == names["classes"]
    man = read_manifest(tmp_path / "s" / "manifest.jsonl")
    for rec in man:  # each sample lists the classes it holds, by name
        mask = np.array(Image.open(tmp_path / "s" / "labels" / f"{rec['id']}.png"))
        assert rec["classes"] == [names["classes"][c] for c in np.unique(mask)]
    # a rerun with the same settings resumes (names are recorded, not part of the settings check)
    synthesize(g, ens, ext, 3, tmp_path / "s", batch_size=4, filter_fraction=0.25, progress=False)
    info = export_dataset(tmp_path / "s", "coco", tmp_path / "coco")
    assert info["n"] == 3 and info["classes"] == names["classes"]
    back = read_labels(tmp_path / "coco")
    assert back.class_names() == names["classes"]
    for i, rec in enumerate(man):
        assert np.array_equal(back.mask(i), np.array(Image.open(tmp_path / "s" / "labels" / f"{rec['id']}.png")))
