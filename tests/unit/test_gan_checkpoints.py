"""Generator checkpoints: native round trip, rosinality .pt (convert_weight and train.py files), NVIDIA .pkl
(restricted unpickler, numpy values, conv_clamp), refusals."""

import argparse
import io
import math
import os
import pickle
import sys
import types
import warnings
from collections import OrderedDict

import numpy as np
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


def tiny_gen(res=16, **kw):
    torch.manual_seed(0)
    g = Generator(res, **TINY, **kw).eval()
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


def test_native_round_trip_keeps_conv_clamp(tmp_path):
    g = tiny_gen(16, conv_clamp=0.3)
    h = load_generator(save_generator(g, tmp_path / "g.pt"))
    assert h.conv_clamp == 0.3 and same_output(g, h)
    assert not same_output(tiny_gen(16), h)  # the clamp is active at this value


def test_rosinality_round_trip_bit_exact(tmp_path):
    g = tiny_gen(16)
    torch.save({**to_rosinality_state_dict(g), "d": {}, "args": None}, tmp_path / "ros.pt")
    h = load_rosinality_pt(tmp_path / "ros.pt")
    assert h.z_dim == 16 and h.n_mapping == 2 and h.channels == g.channels
    assert torch.equal(h.w_avg, g.w_avg)
    assert same_output(g, h)
    assert same_output(g, load_generator(tmp_path / "ros.pt"))


def _train_py_checkpoint(g, **args):
    """What rosinality's train.py saves: g, d, g_ema, optimizer states, ``args`` (an argparse.Namespace), ada_aug_p;
    no latent_avg."""
    sd = to_rosinality_state_dict(g)["g_ema"]
    ns = argparse.Namespace(path="lmdb/", arch="stylegan2", iter=800000, batch=16, n_sample=64, size=16, r1=10.0,
                            path_regularize=2.0, path_batch_shrink=2, d_reg_every=16, g_reg_every=4, mixing=0.9,
                            ckpt=None, lr=0.002, channel_multiplier=2, wandb=False, local_rank=0, augment=False,
                            augment_p=0, ada_target=0.6, ada_length=500000, ada_every=256, latent=16, n_mlp=2,
                            start_iter=0, distributed=False)  # fmt: skip
    for k, v in args.items():
        setattr(ns, k, v)
    return {"g": sd, "d": {"convs.0.0.weight": torch.zeros(1)}, "g_ema": sd,
            "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0]}]}, "d_optim": {"state": {}},
            "args": ns, "ada_aug_p": 0.25}  # fmt: skip


def test_rosinality_train_py_checkpoint_with_namespace_args(tmp_path):
    g = tiny_gen(16)
    torch.save(_train_py_checkpoint(g), tmp_path / "010000.pt")
    with pytest.raises(Exception, match="Weights only load failed"):  # what a plain weights_only load does with it
        torch.load(tmp_path / "010000.pt", weights_only=True)
    from autolabel.gan.checkpoints import _torch_load, rosinality_args

    assert rosinality_args(_torch_load(tmp_path / "010000.pt")) == dict(size=16, latent=16, n_mlp=2,
                                                                         channel_multiplier=2)  # fmt: skip
    # size / latent / n_mlp agree with the tensors; the tiny channel widths are not rosinality's table for cm=2
    with pytest.warns(UserWarning) as rec:
        h = load_generator(tmp_path / "010000.pt")
    assert len(rec) == 1 and "channel_multiplier=2 (weights: channels [32, 16, 8])" in str(rec[0].message)
    assert "size=" not in str(rec[0].message) and "latent=" not in str(rec[0].message)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(h.synthesis(h.style(z).unsqueeze(1).repeat(1, h.num_ws, 1)),
                       g.synthesis(g.style(z).unsqueeze(1).repeat(1, g.num_ws, 1)))  # fmt: skip


def test_rosinality_args_that_contradict_the_weights_are_named(tmp_path):
    torch.save(_train_py_checkpoint(tiny_gen(16), size=32, n_mlp=8), tmp_path / "bad_args.pt")
    with pytest.warns(UserWarning, match=r"size=32 \(weights: 16\), n_mlp=8 \(weights: 2\)"):
        h = load_rosinality_pt(tmp_path / "bad_args.pt")
    assert h.resolution == 16 and h.n_mapping == 2  # the tensors decide


def test_rosinality_without_latent_avg_gives_the_same_w_avg_on_every_load(tmp_path):
    g = tiny_gen(16)
    torch.save(_train_py_checkpoint(g, channel_multiplier=None), tmp_path / "ros.pt")
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # args agree with the tensors: no warning
        h1 = load_rosinality_pt(tmp_path / "ros.pt")
    torch.manual_seed(2)  # a different global RNG state must not matter
    h2 = load_rosinality_pt(tmp_path / "ros.pt")
    assert torch.any(h1.w_avg) and torch.equal(h1.w_avg, h2.w_avg)
    assert torch.allclose(h1.w_avg, g.mean_latent(4096), atol=1e-6)  # the documented recipe: 4096 latents, seed 0
    assert not torch.allclose(h1.w_avg, g.w_avg)  # ... not the (unsaved) original average


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
        nv[f"synthesis.b{r}.resample_filter"] = torch.ones(4, 4)
        layer(f"synthesis.b{r}.conv0", f"convs.{2 * j}", 2 * j + 1)
        layer(f"synthesis.b{r}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        rgb(f"synthesis.b{r}.torgb", f"to_rgbs.{j}")
    return nv


@pytest.fixture
def fake_nvidia_modules():
    """Temporarily defines dnnlib / dnnlib.util / torch_utils.persistence under their real names (only to WRITE the
    pickle, the way stylegan2-ada's persistence does), then removes them before anything is loaded."""
    names = ["dnnlib", "dnnlib.util", "torch_utils", "torch_utils.persistence"]
    saved = {n: sys.modules.get(n) for n in names}
    dnnlib, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    tu, pers = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    class EasyDict(dict):  # attribute-access dict, like dnnlib.util.EasyDict
        def __getattr__(self, name):
            return self[name]

        def __setattr__(self, name, value):
            self[name] = value

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = dnnlib.EasyDict = EasyDict

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("must never run when loading")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Persistent:
        """Pickles like a @persistent_class module: its source text + class name + its __dict__ as 'state'."""

        def __init__(self, name, state):
            self.name, self.st = name, state

        def __reduce__(self):
            meta = dict(type="class", version=6, module_src="import os\nos.system('echo pwned')",
                        class_name=self.name, state=self.st)  # fmt: skip
            return (_reconstruct_persistent_obj, (meta,), None)

    sys.modules.update({"dnnlib": dnnlib, "dnnlib.util": util, "torch_utils": tu, "torch_utils.persistence": pers})
    yield EasyDict, Persistent
    for n, m in saved.items():
        if m is None:
            sys.modules.pop(n, None)
        else:
            sys.modules[n] = m


def _module_state(cname: str, key: str, tensors: dict, EasyDict, res: int, conv_clamp) -> dict:
    """The plain attributes a stylegan2-ada module of class ``cname`` carries next to its tensors (numpy scalars
    included, as its networks.py computes gains with numpy)."""
    if cname == "FullyConnectedLayer":
        in_f = tensors["weight"].shape[1]
        lr = 0.01 if key.startswith("fc") else 1
        return dict(activation="lrelu" if key.startswith("fc") else "linear", weight_gain=lr / np.sqrt(in_f),
                    bias_gain=lr)  # fmt: skip
    if cname == "SynthesisLayer":
        return dict(resolution=tensors["noise_const"].shape[-1], up=2 if key == "conv0" else 1, use_noise=True,
                    activation="lrelu", conv_clamp=conv_clamp, padding=1, act_gain=np.sqrt(2))  # fmt: skip
    if cname == "ToRGBLayer":
        return dict(conv_clamp=conv_clamp, weight_gain=1 / np.sqrt(tensors["weight"].shape[1]))
    if cname == "SynthesisBlock":
        r = int(key[1:])
        return dict(in_channels=0 if r == 4 else 32, w_dim=16, resolution=r, img_channels=3, is_last=r == res,
                    architecture="skip", use_fp16=r >= 16, channels_last=False, num_conv=1 if r == 4 else 2,
                    num_torgb=1)  # fmt: skip
    if cname == "MappingNetwork":
        return dict(z_dim=16, c_dim=0, w_dim=16, num_ws=None, num_layers=2, w_avg_beta=0.995)
    if cname == "SynthesisNetwork":
        lg = int(math.log2(res))
        return dict(w_dim=16, img_resolution=res, img_resolution_log2=lg, img_channels=3,
                    block_resolutions=[2**i for i in range(2, lg + 1)], num_ws=2 * lg - 2)  # fmt: skip
    return {}


_CLASS = {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "affine": "FullyConnectedLayer",
          "conv0": "SynthesisLayer", "conv1": "SynthesisLayer", "torgb": "ToRGBLayer", "skip": "Conv2dLayer"}  # fmt: skip
_HOOK_DICTS = ("_backward_pre_hooks", "_backward_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")  # fmt: skip


def _module_tree(flat: dict, fake, res: int, conv_clamp=None, extra=None):
    """Nested persistent-module states, as torch.nn.Module.__dict__ of stylegan2-ada's classes, from flat names."""
    EasyDict, Persistent = fake
    tree: dict = {}
    for k, v in flat.items():
        node = tree
        parts = k.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v

    def build(node, cname, key, attrs=None, init_kwargs=None):
        params, bufs, mods = OrderedDict(), OrderedDict(), OrderedDict()
        tensors = {k: v for k, v in node.items() if not isinstance(v, dict)}
        for k, v in node.items():
            if isinstance(v, dict):
                sub = _CLASS.get(k) or ("SynthesisBlock" if k[:1] == "b" else "FullyConnectedLayer")
                mods[k] = build(v, sub, k)
            elif k in ("w_avg", "noise_const", "resample_filter"):
                bufs[k] = v.clone()
            else:
                params[k] = torch.nn.Parameter(v.clone())
        state = {"training": False, "_parameters": params, "_buffers": bufs,
                 "_non_persistent_buffers_set": set(), **{h: OrderedDict() for h in _HOOK_DICTS},
                 "_is_full_backward_hook": None, "_modules": mods,
                 **_module_state(cname, key, tensors, EasyDict, res, conv_clamp), **(attrs or {}),
                 "_init_args": (), "_init_kwargs": init_kwargs or {}}  # fmt: skip
        return Persistent(cname, state)

    init = dict(z_dim=16, c_dim=(extra or {}).get("c_dim", 0), w_dim=16, img_resolution=res, img_channels=3,
                mapping_kwargs=EasyDict(num_layers=2),
                synthesis_kwargs=EasyDict(channel_base=64, channel_max=32, num_fp16_res=1, conv_clamp=conv_clamp))  # fmt: skip
    return build(tree, "Generator", "", extra, init)


def _write_pkl(path, g, fake, c_dim=0, extra_tensor=False, conv_clamp=None, protocol=pickle.DEFAULT_PROTOCOL,
               numpy1_names=False, tweak=None):  # fmt: skip
    EasyDict, Persistent = fake
    nv = _nvidia_state(g)
    if extra_tensor:
        nv["synthesis.b8.skip.weight"] = torch.zeros(3)
    G = _module_tree(nv, fake, g.resolution, conv_clamp,
                     extra={"z_dim": 16, "c_dim": c_dim, "w_dim": 16, "img_resolution": g.resolution, "img_channels": 3,
                            "num_ws": g.num_ws})  # fmt: skip
    if tweak:
        tweak(G)
    # an augment pipe holding a numpy array and a numpy scalar, as forks do
    pipe = Persistent("AugmentPipe", {"training": False, "_parameters": OrderedDict(), "_modules": OrderedDict(),
                                      "_buffers": OrderedDict(p=torch.zeros([])), "xflip": np.float32(1.0),
                                      "probs": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)})  # fmt: skip
    data = {"G": G, "D": None, "G_ema": G, "augment_pipe": pipe,
            "training_set_kwargs": EasyDict(class_name="training.dataset.ImageFolderDataset", path="x.zip",
                                            use_labels=False, max_size=None, xflip=False, resolution=g.resolution)}  # fmt: skip
    blob = pickle.dumps(data, protocol=protocol)
    if numpy1_names:  # numpy 1.x pickles name its internals numpy.core (text GLOBAL opcodes up to protocol 3)
        assert protocol <= 3 and b"numpy._core." in blob
        blob = blob.replace(b"numpy._core.", b"numpy.core.")
    path.write_bytes(blob)


def _unpickle(path):
    from autolabel.gan.checkpoints import _RestrictedUnpickler

    with open(path, "rb") as f:
        return _RestrictedUnpickler(f).load()


@pytest.mark.parametrize("protocol,numpy1", [(3, True), (4, False), (5, False)])
def test_nvidia_pickle_with_numpy_values_loads_without_its_modules(tmp_path, fake_nvidia_modules, protocol, numpy1):
    g = tiny_gen(16)
    _write_pkl(tmp_path / "net.pkl", g, fake_nvidia_modules, protocol=protocol, numpy1_names=numpy1)
    for n in ["dnnlib", "dnnlib.util", "torch_utils", "torch_utils.persistence"]:
        sys.modules.pop(n, None)
    h = load_stylegan2_ada_pkl(tmp_path / "net.pkl")
    assert "dnnlib" not in sys.modules and "torch_utils" not in sys.modules
    assert torch.equal(h.w_avg, g.w_avg) and same_output(g, h) and h.conv_clamp is None
    assert same_output(g, load_generator(tmp_path / "net.pkl"))
    # the numpy values come back as the same numpy values
    data = _unpickle(tmp_path / "net.pkl")
    fc0 = data["G_ema"].state["_modules"]["mapping"].state["_modules"]["fc0"].state
    assert type(fc0["weight_gain"]) is np.float64 and fc0["weight_gain"] == 0.01 / np.sqrt(16)
    conv = data["G_ema"].state["_modules"]["synthesis"].state["_modules"]["b8"].state["_modules"]["conv0"].state
    assert conv["act_gain"] == np.sqrt(2) and conv["up"] == 2
    probs = data["augment_pipe"].state["probs"]
    assert probs.dtype == np.float32 and np.array_equal(probs, np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3))
    assert data["G_ema"].state["_init_kwargs"]["synthesis_kwargs"]["num_fp16_res"] == 1  # EasyDict stand-in
    assert data["training_set_kwargs"]["resolution"] == 16


def test_nvidia_conv_clamp_is_honoured(tmp_path, fake_nvidia_modules):
    g = tiny_gen(16, conv_clamp=0.3)  # small enough to clip this tiny net (NVIDIA's train.py uses 256)
    _write_pkl(tmp_path / "clamp.pkl", g, fake_nvidia_modules, conv_clamp=0.3)
    h = load_stylegan2_ada_pkl(tmp_path / "clamp.pkl")
    assert h.conv_clamp == 0.3 and same_output(g, h)
    img, feats = h(torch.randn(2, 16), return_features=True)
    assert all(f.abs().max() <= 0.3 for f in feats[1:])  # every styled-conv output (the constant is not clamped)
    assert not same_output(tiny_gen(16), h)  # ignoring the clamp would change the images


def test_nvidia_differing_conv_clamp_refused(tmp_path, fake_nvidia_modules):
    def tweak(G):
        G.st["_modules"]["synthesis"].st["_modules"]["b8"].st["_modules"]["conv1"].st["conv_clamp"] = 128

    _write_pkl(tmp_path / "mixed.pkl", tiny_gen(16), fake_nvidia_modules, conv_clamp=256, tweak=tweak)
    with pytest.raises(CheckpointError, match="different conv_clamp values"):
        load_stylegan2_ada_pkl(tmp_path / "mixed.pkl")


def test_nvidia_conditional_or_other_arch_refused(tmp_path, fake_nvidia_modules):
    g = tiny_gen(16)
    _write_pkl(tmp_path / "c.pkl", g, fake_nvidia_modules, c_dim=10)
    _write_pkl(tmp_path / "r.pkl", g, fake_nvidia_modules, extra_tensor=True)
    with pytest.raises(CheckpointError, match="conditional generator"):
        load_stylegan2_ada_pkl(tmp_path / "c.pkl")
    with pytest.raises(CheckpointError, match="unsupported G_ema tensors"):
        load_stylegan2_ada_pkl(tmp_path / "r.pkl")


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_values_round_trip_and_numpy1_names(tmp_path, protocol):
    vals = {"f64": np.float64(0.125), "f32": np.float32(-2.5), "i64": np.int64(7), "b": np.bool_(True),
            "arr": np.arange(12, dtype=np.float32).reshape(3, 4), "iarr": np.array([[1, 2]], dtype=np.int16)}  # fmt: skip
    blob = pickle.dumps({"G_ema": vals}, protocol=protocol)
    variants = [blob] + ([blob.replace(b"numpy._core.", b"numpy.core.")] if protocol <= 3 else [])
    for i, b in enumerate(variants):
        (tmp_path / f"v{i}.pkl").write_bytes(b)
        out = _unpickle(tmp_path / f"v{i}.pkl")["G_ema"]
        for k, v in vals.items():
            assert type(out[k]) is type(v) and out[k].dtype == v.dtype and np.array_equal(out[k], v), k


@pytest.mark.parametrize("bad", [np.array([1, None], dtype=object), np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
                                 np.array(["ab"])])  # fmt: skip
def test_non_numeric_numpy_values_refused(tmp_path, bad):
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"G_ema": bad}, protocol=4))
    with pytest.raises(CheckpointError, match="not allowed"):
        load_stylegan2_ada_pkl(tmp_path / "bad.pkl")


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
    with pytest.raises(CheckpointError, match="tensor blob inside the NVIDIA pickle was refused: .*system"):
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


class _DirectNdarray:
    def __reduce__(self):
        return (np.ndarray, ((2,), "O"))


def test_numpy_ndarray_cannot_be_called_directly(tmp_path):
    (tmp_path / "nd.pkl").write_bytes(pickle.dumps({"G_ema": _DirectNdarray()}, protocol=4))
    with pytest.raises(CheckpointError, match="calls numpy.ndarray directly"):
        load_stylegan2_ada_pkl(tmp_path / "nd.pkl")
