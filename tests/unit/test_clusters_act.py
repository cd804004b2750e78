"""Acting on clusters: assigning new samples without re-clustering, cluster folders + contact sheets, own embedders."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.data.pools import l2_normalize
from autolabel.errors import CheckpointError, ConfigError, DataError
from autolabel.hilander.assign import assign_to_clusters


class _SimilarityLink(torch.nn.Module):
    """Stand-in for a trained LANDER: P(same class) = the edge's cosine similarity."""

    feature_dim = 16

    def forward(self, g):
        from torch_geometric.utils import scatter

        p = g.edge_sim.clamp(1e-6, 1 - 1e-6)
        density = scatter(g.edge_sim, g.edge_index[1], dim=0, dim_size=g.num_nodes, reduce="mean")
        return torch.stack([torch.log1p(-p), torch.log(p)], dim=1), density


def _blobs(centres, per, spread, rng):
    return l2_normalize(np.repeat(centres, per, axis=0) + spread * rng.normal(size=(len(centres) * per, 16)))


def test_assign_joins_near_samples_and_opens_a_new_cluster_for_far_ones():
    rng = np.random.default_rng(0)
    centres = l2_normalize(rng.normal(size=(4, 16)))
    pool = _blobs(centres[:3], 10, 0.05, rng)
    clusters = np.repeat(np.array(["7", "3", "5"], dtype=object), 10)
    near = _blobs(centres[:3], 2, 0.05, rng)  # two new samples per existing cluster
    far = _blobs(centres[3:], 3, 0.05, rng)  # three samples of a class the pool never had
    res = assign_to_clusters(_SimilarityLink(), pool, clusters, np.concatenate([near, far]), k=4, tau=0.8)
    assert res["cluster"][:6].tolist() == ["7", "7", "3", "3", "5", "5"]
    assert (res["outcome"][:6] == "existing").all() and (res["confidence"][:6] > 0.8).all()
    assert (res["outcome"][6:] == "new").all() and res["cluster"][6:].tolist() == ["new-0"] * 3
    assert (res["confidence"][6:] < 0.8).all()  # their best link into the pool is weak
    assert all(clusters[j] == c for j, c in zip(res["nearest"][:6], res["cluster"][:6]))
    with pytest.raises(DataError, match="differ in width"):
        assign_to_clusters(_SimilarityLink(), pool, clusters, near[:, :8])


def _image_folder(root, n):
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(root / f"im{i}.png")


def test_cluster_folders_largest_first_with_contact_sheets(tmp_path):
    from autolabel.data.formats.clusters import export_cluster_folders

    _image_folder(tmp_path / "imgs", 5)
    (tmp_path / "clusters.csv").write_text("id,cluster\nim0,4\nim1,9\nim2,9\nim3,9\nim4,4\n")
    info = export_cluster_folders(tmp_path / "clusters.csv", tmp_path / "imgs", tmp_path / "out")
    assert info == {"clusters": 2, "images": 5, "path": str(tmp_path / "out"), "largest": 3}
    first, second = tmp_path / "out" / "0000_cluster-9_n3", tmp_path / "out" / "0001_cluster-4_n2"
    assert sorted(p.name for p in first.iterdir()) == ["im1.png", "im2.png", "im3.png"]
    assert (first / "im1.png").is_symlink() and (first / "im1.png").resolve() == (tmp_path / "imgs" / "im1.png")
    assert sorted(p.name for p in second.iterdir()) == ["im0.png", "im4.png"]
    sheet = Image.open(tmp_path / "out" / "0000_cluster-9_n3.png")
    assert sheet.size == (3 * 66 + 2, 66 + 2)  # one row of three 64-px thumbnails, 2-px gaps
    listing = json.loads((tmp_path / "out" / "clusters.json").read_text())
    assert [g["cluster"] for g in listing] == ["9", "4"] and listing[1]["members"] == ["im0", "im4"]
    export_cluster_folders(tmp_path / "clusters.csv", tmp_path / "imgs", tmp_path / "copies", copy=True)
    assert not (tmp_path / "copies" / "0000_cluster-9_n3" / "im1.png").is_symlink()
    (tmp_path / "bad.csv").write_text("id,cluster\nnope,1\n")
    with pytest.raises(DataError, match="have no image"):
        export_cluster_folders(tmp_path / "bad.csv", tmp_path / "imgs", tmp_path / "x")


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3)

    def forward(self, x):
        return self.conv(x)  # a [B, C, H, W] map: the embedder average-pools it


def test_torchscript_and_timm_embedders(tmp_path):
    from autolabel.data.embedders import embed_with, load_embedder
    from autolabel.data.pools import load_feature_pool

    for c in ("a", "b"):
        _image_folder(tmp_path / "imgs" / c, 2)
    torch.manual_seed(0)
    net = _Tiny().eval()
    torch.jit.script(net).save(str(tmp_path / "tiny.pt"))
    model, spec = load_embedder(f"torchscript:{tmp_path / 'tiny.pt'}")
    info = embed_with(model, tmp_path / "imgs", tmp_path / "pool.npz", image_size=16, progress=False)
    pool = load_feature_pool(info["path"])
    assert info["dim"] == 6 and pool.n == 4 and pool.labels.tolist() == [0, 0, 1, 1]
    img = np.asarray(Image.open(tmp_path / "imgs" / "b" / "im1.png").resize((16, 16), Image.BILINEAR), np.float32)
    x = torch.from_numpy(img / 255.0).permute(2, 0, 1)[None] - torch.tensor(spec["mean"]).view(1, 3, 1, 1)
    x = x / torch.tensor(spec["std"]).view(1, 3, 1, 1)
    want = net(x.float()).mean((2, 3))[0].detach().numpy()
    assert np.allclose(pool.features[3], want / np.linalg.norm(want), atol=1e-4)
    with pytest.raises(CheckpointError, match="torch.jit.script"):
        load_embedder(f"torchscript:{tmp_path / 'missing.pt'}")
    with pytest.raises(ConfigError, match="torchscript:FILE.pt or timm:NAME"):
        load_embedder("onnx:model.onnx")
    timm = pytest.importorskip("timm")
    ref = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    model, spec = load_embedder("timm:test_resnet", tmp_path / "w.pth")
    probe = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(probe), ref(probe), atol=1e-5)
    with pytest.raises(CheckpointError, match="weights=FILE"):
        load_embedder("timm:test_resnet")
    with pytest.raises(CheckpointError, match="weights file not found"):
        load_embedder("timm:test_resnet", tmp_path / "nope.pth")


def test_export_and_embed_commands_one_line_errors(tmp_path, capsys):
    from autolabel.data.labeled import write_labeled_folder
    from pipelines.cli import main

    pytest.importorskip("pycocotools")
    imgs = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[:, 2:5, 2:6] = 1
    write_labeled_folder(tmp_path / "lab", imgs, "segmentation", masks)
    assert main(["export", f"src={tmp_path / 'lab'}", "format=coco", f"out={tmp_path / 'coco'}"]) == 0
    assert "2 segmentation samples -> coco" in capsys.readouterr().out
    doc = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(doc["images"]) == 2 and len(doc["annotations"]) == 2
    assert main(["export", f"src={tmp_path / 'lab'}", "format=tiff", f"out={tmp_path / 'x'}"]) == 2
    assert "format='tiff'" in capsys.readouterr().err
    assert main(["embed", f"images={tmp_path / 'lab' / 'images'}", f"embedder=torchscript:{tmp_path / 'no.pt'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TorchScript file not found" in err[0]
    assert main(["embed", f"images={tmp_path / 'lab' / 'images'}"]) == 2
    assert "checkpoint=CKPT" in capsys.readouterr().err
    with open(tmp_path / "c.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "cluster"], ["000000", "1"], ["000001", "1"]])
    assert main(["export", f"src={tmp_path / 'c.csv'}", "format=folders", f"out={tmp_path / 'f'}"]) == 2
    assert "images=DIR" in capsys.readouterr().err
    assert main(["export", f"src={tmp_path / 'c.csv'}", "format=folders", f"images={tmp_path / 'lab' / 'images'}",
                 f"out={tmp_path / 'f'}"]) == 0  # fmt: skip
    assert (tmp_path / "f" / "0000_cluster-1_n2.png").is_file()
