"""Generator checkpoints: native round trip, rosinality .pt, NVIDIA .pkl (restricted unpickler), refusals."""

import io
import math
import os
import pickle
import sys
import types
from collections import OrderedDict

import pytest
import torch

from autolabel.errors import CheckpointError
from autolabel.gan import (
    Generator,
    load_generator,
    load_rosinality_pt,
    load_stylegan2_ada_pkl,
    save_generator,
    to_rosinality_state_dict,
)

TINY = dict(z_dim=16, w_dim=16, n_mapping=2, channel_base=64, channel_max=32)


def tiny_gen(res=16):
    torch.manual_seed(0)
    g = Generator(res, **TINY).eval()
    g.w_avg.copy_(torch.randn(16))
    for m in list(g.convs) + [g.conv1]:
        m.noise.weight.data.normal_()
        m.activate.bias.data.normal_()
    return g


def same_output(a, b):
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    ia, fa = a(z, truncation_psi=0.7, return_features=True)
    ib, fb = b(z, truncation_psi=0.7, return_features=True)
    return torch.equal(ia, ib) and all(torch.equal(x, y) for x, y in zip(fa, fb))


def test_native_round_trip(tmp_path):
    g = tiny_gen(32)
    path = save_generator(g, tmp_path / "g.pt")
    h = load_generator(path)
    assert h.resolution == 32 and h.num_ws == g.num_ws and h.feature_channels == g.feature_channels
    assert same_output(g, h)


def test_rosinality_round_trip_bit_exact(tmp_path):
    g = tiny_gen(16)
    torch.save({**to_rosinality_state_dict(g), "d": {}, "args": None}, tmp_path / "ros.pt")
    h = load_rosinality_pt(tmp_path / "ros.pt")
    assert h.z_dim == 16 and h.n_mapping == 2 and h.channels == g.channels
    assert torch.equal(h.w_avg, g.w_avg)
    assert same_output(g, h)
    assert same_output(g, load_generator(tmp_path / "ros.pt"))


def test_rosinality_without_latent_avg_computes_mean(tmp_path):
    g = tiny_gen(16)
    sd = to_rosinality_state_dict(g)["g_ema"]
    torch.save({"g_ema": sd}, tmp_path / "ros.pt")
    h = load_rosinality_pt(tmp_path / "ros.pt")
    assert torch.any(h.w_avg)


def test_lightning_ckpt_of_ganmodule(tmp_path):
    from autolabel.gan import GANModule

    m = GANModule({"resolution": 16, **TINY}, {"batch_size": 2})
    ckpt = {"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}
    torch.save(ckpt, tmp_path / "last.ckpt")
    h = load_generator(tmp_path / "last.ckpt")
    assert same_output(m.g_ema.eval(), h)


# ----------------------------------------------------------------- NVIDIA-style pickle
def _nvidia_state(g: Generator) -> dict:
    """Inverse of the importer's name mapping: rosinality layout -> stylegan2-ada G_ema tensors."""
    sd = g.state_dict()
    nv = {}
    for i in range(g.n_mapping):
        nv[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
        nv[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]
    nv["mapping.w_avg"] = sd["w_avg"]
    nv["synthesis.b4.const"] = sd["input.input"][0]

    def layer(dst, src, k):
        nv[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        nv[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        nv[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        nv[f"{dst}.noise_strength"] = sd[f"{src}.noise.weight"][0]
        nv[f"{dst}.bias"] = sd[f"{src}.activate.bias"]
        nv[f"{dst}.noise_const"] = sd[f"noises.noise_{k}"][0, 0]
        nv[f"{dst}.resample_filter"] = torch.ones(4, 4)

    def rgb(dst, src):
        nv[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        nv[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        nv[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        nv[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(-1)

    layer("synthesis.b4.conv1", "conv1", 0)
    rgb("synthesis.b4.torgb", "to_rgb1")
    for j in range(int(math.log2(g.resolution)) - 2):
        r = 2 ** (j + 3)
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * j + 1)
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        rgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
    return nv


@pytest.fixture
def fake_nvidia_modules():
    """Temporarily defines dnnlib / torch_utils.persistence (only to WRITE the pickle), then removes them."""
    names = ["dnnlib", "dnnlib.util", "torch_utils", "torch_utils.persistence"]
    saved = {n: sys.modules.get(n) for n in names}
    dnnlib, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    tu, pers = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("must never run when loading")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Persistent:
        def __init__(self, name, state):
            self.name, self.st = name, state

        def __reduce__(self):
            meta = dict(type="class", version=6, module_src="import os\nos.system('echo pwned')",
                        class_name=self.name, state=self.st)  # fmt: skip
            return (_reconstruct_persistent_obj, (meta,))

    sys.modules.update({"dnnlib": dnnlib, "dnnlib.util": util, "torch_utils": tu, "torch_utils.persistence": pers})
    yield EasyDict, Persistent
    for n, m in saved.items():
        if m is None:
            sys.modules.pop(n, None)
        else:
            sys.modules[n] = m


def _module_tree(flat: dict, Persistent, name="Generator", extra=None):
    """Nested nn.Module-like __dict__ states from flat dotted names."""
    tree: dict = {}
    for k, v in flat.items():
        node = tree
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v

    def build(node, cname, attrs=None):
        params, bufs, mods = OrderedDict(), OrderedDict(), OrderedDict()
        for k, v in node.items():
            if isinstance(v, dict):
                mods[k] = build(v, "Sub")
            elif k in ("w_avg", "noise_const", "resample_filter"):
                bufs[k] = v.clone()
            else:
                params[k] = torch.nn.Parameter(v.clone())
        state = {"training": False, "_parameters": params, "_buffers": bufs, "_modules": mods,
                 "_non_persistent_buffers_set": set(), **(attrs or {})}  # fmt: skip
        return Persistent(cname, state)

    return build(tree, name, extra)


def _write_pkl(path, g, fake, c_dim=0, extra_tensor=False):
    EasyDict, Persistent = fake
    nv = _nvidia_state(g)
    if extra_tensor:
        nv["synthesis.b8.skip.weight"] = torch.zeros(3)
    G = _module_tree(nv, Persistent, extra={"z_dim": 16, "c_dim": c_dim, "w_dim": 16, "img_resolution": g.resolution})
    data = {"G": G, "D": None, "G_ema": G, "training_set_kwargs": EasyDict(path="x.zip", resolution=g.resolution),
            "augment_pipe": None}  # fmt: skip
    with open(path, "wb") as f:
        pickle.dump(data, f)


def test_nvidia_pickle_loads_without_its_modules(tmp_path, fake_nvidia_modules):
    g = tiny_gen(16)
    _write_pkl(tmp_path / "net.pkl", g, fake_nvidia_modules)
    for n in ["dnnlib", "dnnlib.util", "torch_utils", "torch_utils.persistence"]:
        sys.modules.pop(n, None)
    h = load_stylegan2_ada_pkl(tmp_path / "net.pkl")
    assert "dnnlib" not in sys.modules and "torch_utils" not in sys.modules
    assert torch.equal(h.w_avg, g.w_avg) and same_output(g, h)
    assert same_output(g, load_generator(tmp_path / "net.pkl"))


def test_nvidia_conditional_or_other_arch_refused(tmp_path, fake_nvidia_modules):
    g = tiny_gen(16)
    _write_pkl(tmp_path / "c.pkl", g, fake_nvidia_modules, c_dim=10)
    _write_pkl(tmp_path / "r.pkl", g, fake_nvidia_modules, extra_tensor=True)
    with pytest.raises(CheckpointError, match="conditional generator"):
        load_stylegan2_ada_pkl(tmp_path / "c.pkl")
    with pytest.raises(CheckpointError, match="unsupported G_ema tensors"):
        load_stylegan2_ada_pkl(tmp_path / "r.pkl")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_refused(tmp_path):
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Evil()}))
    with pytest.raises(CheckpointError, match="not allowed"):
        load_stylegan2_ada_pkl(tmp_path / "evil.pkl")
    with pytest.raises(CheckpointError, match="not allowed"):
        load_generator(tmp_path / "evil.pkl")


def test_nested_storage_bytes_are_loaded_weights_only(tmp_path):
    """A storage payload that is itself a malicious pickle is refused (torch weights_only)."""
    from autolabel.gan.checkpoints import _RestrictedUnpickler

    buf = io.BytesIO()
    torch.save(_Evil(), buf, _use_new_zipfile_serialization=False)
    import torch.storage as ts

    class Call:
        def __reduce__(self):
            return (ts._load_from_bytes, (buf.getvalue(),))

    blob = pickle.dumps({"G_ema": Call()})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        _RestrictedUnpickler(io.BytesIO(blob)).load()


def test_refusals(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "missing.pt")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="unrecognized generator checkpoint"):
        load_generator(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_generator(tmp_path / "junk.pt")
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4, 4)}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="missing StyleGAN2 tensor"):
        load_rosinality_pt(tmp_path / "partial.pt")
    (tmp_path / "nog.pkl").write_bytes(pickle.dumps({"D": 1}))
    with pytest.raises(CheckpointError, match="no 'G_ema'"):
        load_stylegan2_ada_pkl(tmp_path / "nog.pkl")
    g = tiny_gen(16)
    sd = to_rosinality_state_dict(g)
    sd["g_ema"]["conv1.conv.weight"] = torch.zeros(1, 2, 2, 3, 3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_rosinality_pt(tmp_path / "bad.pt")
