"""Generator checkpoints: native format, rosinality ``.pt``, Lightning ``.ckpt`` of :class:`GANModule`, and NVIDIA
stylegan2-ada ``.pkl`` read with a restricted unpickler (nothing from ``dnnlib``/``torch_utils`` is imported or run).

NVIDIA -> this layout (both store unscaled weights and apply the equalized-lr gain at run time):
``mapping.fc{i}`` -> ``style.{i+1}``; ``mapping.w_avg`` -> ``w_avg``; ``synthesis.b4.const`` -> ``input.input``;
``b4.conv1`` -> ``conv1``; ``b4.torgb`` -> ``to_rgb1``; ``b{res}.conv0/conv1`` -> ``convs.{2j}/{2j+1}``,
``b{res}.torgb`` -> ``to_rgbs.{j}`` (j = log2(res) - 3); ``.affine`` -> ``.conv.modulation``; ``.bias`` ->
``.activate.bias``; ``noise_strength`` -> ``noise.weight``; ``noise_const`` -> ``noises.noise_k``.
Supported: unconditional (c_dim = 0) generators with the 'skip' synthesis architecture (stylegan2-ada defaults).
NVIDIA's ``conv_clamp`` (256 in networks trained by its train.py) clamps every synthesis layer's activated output and
every toRGB output to +-conv_clamp whenever it is set -- in fp32 layers too, not only fp16 ones -- so the importer
reads it from the layers and builds the generator with the same ``conv_clamp``. Numpy scalars and arrays in the pickle
(``weight_gain``, ``act_gain``, ...) are rebuilt by a few allow-listed numpy functions, numeric dtypes only.

rosinality ``.pt``: ``g_ema`` + ``latent_avg`` (convert_weight.py) or a train.py checkpoint (``args`` is an
``argparse.Namespace``, allow-listed for ``torch.load(weights_only=True)``; its size / latent / n_mlp /
channel_multiplier are checked against the tensor shapes). Without ``latent_avg``, ``w_avg`` is the mean of 4096
mapped latents from a fixed seed (:meth:`Generator.mean_latent`), the same on every load.
"""

from __future__ import annotations

import argparse
import importlib
import math
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from autolabel.config.gan import DISCRIMINATOR_KEYS
from autolabel.engine.io import atomic_torch_save
from autolabel.errors import CheckpointError
from autolabel.gan.stylegan2 import Generator, channel_schedule

NATIVE_FORMAT = "autolabel.gan.generator"
SUPPORTED = "native (save_generator), rosinality .pt (g_ema), GANModule .ckpt, NVIDIA stylegan2-ada .pkl"


def save_generator(gen: Generator, path: str | Path) -> Path:
    """Write ``gen`` (constructor kwargs + state dict) atomically; :func:`load_generator` reads it back."""
    return atomic_torch_save({"format": NATIVE_FORMAT, "version": 1, "kwargs": dict(gen.init_kwargs),
                              "state_dict": gen.state_dict()}, path)  # fmt: skip


def _require(path: str | Path) -> Path:
    from autolabel.engine.checkpoint_io import check_checkpoint_file

    return check_checkpoint_file(path, "generator checkpoint", f"give the path of a {SUPPORTED} file")


def _torch_load(p: Path) -> object:
    # rosinality's train.py stores its argparse.Namespace under "args": a plain attribute bag, allow-listed by the
    # project's loader
    from autolabel.engine.checkpoint_io import load_checkpoint

    return load_checkpoint(p, what="generator checkpoint", hint=f"supported: {SUPPORTED}")


def load_generator(path: str | Path, **kw) -> Generator:
    """Load a generator from any supported format (dispatch on content). ``kw`` is passed to the specific loader."""
    p = _require(path)
    with open(p, "rb") as f:
        head = f.read(2)
    if p.suffix == ".pkl" or (head[:1] == b"\x80" and not zipfile.is_zipfile(p)):
        return load_stylegan2_ada_pkl(p, **kw)
    obj = _torch_load(p)
    if isinstance(obj, dict) and obj.get("format") == NATIVE_FORMAT:
        return _build(obj["kwargs"], obj["state_dict"], p, **kw)
    if isinstance(obj, dict) and "g_ema" in obj:
        return load_rosinality_pt(p, _obj=obj, **kw)
    if isinstance(obj, dict) and "state_dict" in obj and any(k.startswith("g_ema.") for k in obj["state_dict"]):
        hp = obj.get("hyper_parameters", {}).get("generator")
        sd = {k[len("g_ema.") :]: v for k, v in obj["state_dict"].items() if k.startswith("g_ema.")}
        if hp is None:
            return _from_state_dict(sd, p, **kw)
        gk = {k: v for k, v in hp.items() if k not in DISCRIMINATOR_KEYS}
        return _build(gk, sd, p, **kw)
    keys = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{p}: unrecognized generator checkpoint (found {keys}) -- supported: {SUPPORTED}")


def _build(kwargs: dict, state: dict, p: Path, **kw) -> Generator:
    gen = Generator(**{**kwargs, **kw})
    try:
        gen.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0][:200]
        raise CheckpointError(
            f"{p}: weights do not fit the generator ({first}) -- is it a StyleGAN2 generator?"
        ) from None
    return gen.eval()


def infer_generator_kwargs(sd: dict[str, Tensor], p: Path | str = "checkpoint") -> dict:
    """Generator kwargs (resolution, dims, channels, n_mapping, img_channels) read from rosinality-style tensor shapes."""
    try:
        n_mapping = len({int(m.group(1)) for k in sd if (m := re.match(r"style\.(\d+)\.weight$", k))})
        z_dim = sd["style.1.weight"].shape[1]
        w_dim = sd[f"style.{n_mapping}.weight"].shape[0]
        n_up = len({int(m.group(1)) for k in sd if (m := re.match(r"to_rgbs\.(\d+)\.", k))})
        channels = [sd["input.input"].shape[1]] + [sd[f"to_rgbs.{j}.conv.weight"].shape[2] for j in range(n_up)]
        img_channels = sd["to_rgb1.conv.weight"].shape[1]
    except (KeyError, IndexError) as e:
        raise CheckpointError(f"{p}: missing StyleGAN2 tensor {e} -- supported: {SUPPORTED}") from None
    if n_mapping == 0:
        raise CheckpointError(f"{p}: no mapping layers (style.*) found -- supported: {SUPPORTED}")
    return dict(resolution=2 ** (n_up + 2), z_dim=int(z_dim), w_dim=int(w_dim), n_mapping=n_mapping,
                channels=[int(c) for c in channels], img_channels=int(img_channels))  # fmt: skip


def _from_state_dict(sd: dict[str, Tensor], p: Path, w_avg: Tensor | None = None, **kw) -> Generator:
    sd = dict(sd)
    kwargs = infer_generator_kwargs(sd, p)
    if "w_avg" not in sd:
        sd["w_avg"] = w_avg.reshape(-1) if w_avg is not None else torch.zeros(kwargs["w_dim"])
    for k in list(sd):  # FIR kernels are constants rebuilt by the module
        if k.endswith(".kernel"):
            sd.pop(k)
    gen = Generator(**{**kwargs, **kw})
    for k, v in gen.state_dict().items():
        if k.endswith(".kernel"):
            sd[k] = v
    try:
        gen.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0][:200]
        raise CheckpointError(
            f"{p}: weights do not fit the inferred generator ({first}) -- supported: {SUPPORTED}"
        ) from None
    if w_avg is None and not torch.any(gen.w_avg):
        gen.w_avg.copy_(gen.mean_latent(4096))
    return gen.eval()


ROSINALITY_ARGS = ("size", "latent", "n_mlp", "channel_multiplier")


def rosinality_args(obj: object) -> dict:
    """The architecture fields (size, latent, n_mlp, channel_multiplier) of a rosinality checkpoint's ``args``
    (an ``argparse.Namespace`` from train.py, or a dict); missing or non-integer fields are left out."""
    args = obj.get("args") if isinstance(obj, dict) else None
    fields = vars(args) if isinstance(args, argparse.Namespace) else args if isinstance(args, dict) else {}
    return {k: int(fields[k]) for k in ROSINALITY_ARGS if isinstance(fields.get(k), (int, float))}


def _check_rosinality_args(args: dict, gen: Generator, p: Path) -> None:
    expect = {"size": gen.resolution, "latent": gen.w_dim, "n_mlp": gen.n_mapping}
    bad = [f"{k}={v} (weights: {expect[k]})" for k, v in args.items() if k in expect and v != expect[k]]
    cm = args.get("channel_multiplier")
    if cm is not None and gen.channels != channel_schedule(gen.resolution, channel_multiplier=cm):
        bad.append(f"channel_multiplier={cm} (weights: channels {gen.channels})")
    if bad:
        warnings.warn(f"{p}: checkpoint args disagree with its g_ema tensors: {', '.join(bad)}; the tensor shapes "
                      "were used -- check that this is the intended checkpoint", stacklevel=3)  # fmt: skip


def load_rosinality_pt(path: str | Path, _obj: object = None, **kw) -> Generator:
    """Load ``g_ema`` (+ ``latent_avg`` as ``w_avg``) of a rosinality ``stylegan2-pytorch`` checkpoint, strictly.

    Works for convert_weight.py outputs and for train.py checkpoints (which pickle ``args`` as an
    ``argparse.Namespace``); the architecture comes from the tensor shapes and is cross-checked against ``args``.
    """
    p = _require(path)
    obj = _obj if _obj is not None else _torch_load(p)
    if not isinstance(obj, dict) or "g_ema" not in obj:
        found = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{p}: no 'g_ema' in rosinality checkpoint (found {found}) -- supported: {SUPPORTED}")
    lat = obj.get("latent_avg")
    gen = _from_state_dict(obj["g_ema"], p, w_avg=lat if isinstance(lat, Tensor) else None, **kw)
    _check_rosinality_args(rosinality_args(obj), gen, p)
    return gen


def to_rosinality_state_dict(gen: Generator) -> dict:
    """A rosinality-format checkpoint dict ``{"g_ema": ..., "latent_avg": ...}`` of ``gen`` (for export and tests)."""
    sd = {k: v.detach().clone() for k, v in gen.state_dict().items() if k != "w_avg"}
    return {"g_ema": sd, "latent_avg": gen.w_avg.detach().clone()}


# ------------------------------------------------------------------ NVIDIA pickle
class _Inert:
    """Stand-in for a pickled class from dnnlib/torch_utils/torch.nn: it only stores its state."""

    def __init__(self, *args, **kwargs):
        self.args, self.state = args, {}

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slotstate)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"_state": state}


class _InertDict(dict):
    """Stand-in for ``dnnlib.EasyDict``."""

    def __setstate__(self, state) -> None:
        if isinstance(state, dict):
            self.update(state)


def _reconstruct_persistent(meta) -> _Inert:
    obj = _Inert()
    if isinstance(meta, dict):
        obj.class_name = meta.get("class_name")
        obj.__setstate__(meta.get("state") or {})
    return obj


def _safe_load_from_bytes(b: bytes):
    from autolabel.engine.checkpoint_io import load_checkpoint_bytes

    return load_checkpoint_bytes(b, "a tensor blob inside the NVIDIA pickle", hint=f"supported: {SUPPORTED}")


def _rebuild_parameter(data, requires_grad, backward_hooks, *rest):
    return torch.nn.Parameter(data, requires_grad=False)


# numpy reconstruction: NVIDIA's modules keep numpy scalars (``weight_gain = lr_multiplier / np.sqrt(in)``,
# ``act_gain``) and may keep arrays. Only numeric dtypes are rebuilt (bool, int, uint, float, complex; no object or
# structured dtypes), by numpy's own constructors, so nothing but numbers and buffers can come out of them.
_NUMERIC_KINDS = "biufc"


def _numeric_dtype(d: object) -> np.dtype:
    if not isinstance(d, np.dtype) or d.kind not in _NUMERIC_KINDS or d.fields is not None or d.subdtype is not None:
        raise CheckpointError(f"pickle holds a numpy value of dtype {d!r}, which is not allowed -- only numeric numpy "
                              f"scalars/arrays can be read; {SUPPORTED}")  # fmt: skip
    return d


def _np_dtype(spec, align=False, copy=False) -> np.dtype:
    if not isinstance(spec, str):
        raise CheckpointError(f"pickle builds a numpy dtype from {type(spec).__name__}, which is not allowed")
    return _numeric_dtype(np.dtype(spec, bool(align), bool(copy)))


def _np_scalar(dtype, data=None):
    d = _numeric_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or len(data) != d.itemsize:
        raise CheckpointError(f"pickle holds a malformed numpy {d} scalar -- the file is corrupt")
    return np.frombuffer(bytes(data), dtype=d, count=1)[0]


def _np_core(sub: str):
    # numpy >= 2 names its internals numpy._core, numpy 1.x numpy.core; the pickle may use either name
    try:
        return importlib.import_module(f"numpy._core.{sub}")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module(f"numpy.core.{sub}")


def _ndarray_ref(*args, **kwargs):
    """What the pickle's ``numpy.ndarray`` resolves to: only usable as the type argument of ``_reconstruct``."""
    raise CheckpointError(
        "pickle calls numpy.ndarray directly, which is not allowed -- only pickled arrays can be read"
    )


def _np_reconstruct(subtype, shape, typecode):
    if subtype is not _ndarray_ref:
        raise CheckpointError(f"pickle rebuilds a numpy array of type {subtype!r}, which is not allowed")
    return _np_core("multiarray")._reconstruct(np.ndarray, tuple(shape), typecode)


def _np_frombuffer(buf, dtype, shape, order):  # pickle protocol 5 arrays
    d = _numeric_dtype(dtype)
    return np.frombuffer(bytes(buf), dtype=d).reshape(tuple(shape), order="F" if order == "F" else "C").copy()


_NUMPY_GLOBALS = {
    **{(f"numpy.{c}.multiarray", "scalar"): _np_scalar for c in ("core", "_core")},
    **{(f"numpy.{c}.multiarray", "_reconstruct"): _np_reconstruct for c in ("core", "_core")},
    **{(f"numpy.{c}.numeric", "_frombuffer"): _np_frombuffer for c in ("core", "_core")},
    ("numpy", "dtype"): _np_dtype,
    ("numpy", "ndarray"): _ndarray_ref,
}


class _RestrictedUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _safe_load_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
        ("dnnlib.util", "EasyDict"): _InertDict,
        ("dnnlib", "EasyDict"): _InertDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("copyreg", "_reconstructor"): None,  # handled below
        **_NUMPY_GLOBALS,
    }

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key == ("copyreg", "_reconstructor"):
            return lambda cls, base, state: cls()
        if key in self._ALLOWED:
            return self._ALLOWED[key]
        if (
            module == "torch"
            and name.endswith("Storage")
            or module == "torch"
            and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return getattr(torch, name)
        if module.startswith(("torch_utils.", "dnnlib.", "torch.nn.modules.")) or module in ("torch_utils", "dnnlib"):
            if name[:1].isupper():
                return _Inert  # an nn.Module / helper class: collect its state, never import its module
        raise CheckpointError(
            f"pickle refers to {module}.{name}, which is not allowed -- only StyleGAN2-ADA network pickles "
            f"(dnnlib/torch_utils modules, torch tensors, numeric numpy values) can be read; {SUPPORTED}"
        )


def _walk(obj: _Inert, prefix: str = ""):
    """``(dotted name, module)`` for ``obj`` and every nested module."""
    yield prefix.rstrip("."), obj
    for k, v in (obj.state.get("_modules") or {}).items():
        if isinstance(v, _Inert):
            yield from _walk(v, f"{prefix}{k}.")


def _conv_clamp(g: _Inert, p: Path) -> float | None:
    """The synthesis layers' common ``conv_clamp`` (None when unset); NVIDIA sets one value for all of them."""
    vals = set()
    for name, m in _walk(g):
        if name.startswith("synthesis.") and "conv_clamp" in m.state:
            v = m.state["conv_clamp"]
            vals.add(None if v is None else float(v))
    if len(vals) > 1:
        raise CheckpointError(
            f"{p}: synthesis layers use different conv_clamp values {sorted(vals, key=str)} -- only one shared value "
            "(stylegan2-ada's synthesis_kwargs.conv_clamp) is supported"
        )
    return vals.pop() if vals else None


def _collect(obj: _Inert, prefix: str, out: dict[str, Tensor]) -> None:
    st = obj.state
    for group in ("_parameters", "_buffers"):
        for k, v in (st.get(group) or {}).items():
            if isinstance(v, Tensor):
                out[prefix + k] = v.detach()
    for k, v in (st.get("_modules") or {}).items():
        if isinstance(v, _Inert):
            _collect(v, f"{prefix}{k}.", out)


def _nvidia_to_rosinality(nv: dict[str, Tensor], p: Path) -> tuple[dict[str, Tensor], Tensor | None]:
    sd: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(k: str) -> Tensor:
        if k not in nv:
            raise CheckpointError(f"{p}: G_ema lacks {k} -- only stylegan2-ada 'skip' generators are supported")
        used.add(k)
        return nv[k]

    n_map = len({m.group(1) for k in nv if (m := re.match(r"mapping\.fc(\d+)\.weight$", k))})
    for i in range(n_map):
        sd[f"style.{i + 1}.weight"] = take(f"mapping.fc{i}.weight")
        sd[f"style.{i + 1}.bias"] = take(f"mapping.fc{i}.bias")
    w_avg = take("mapping.w_avg") if "mapping.w_avg" in nv else None
    sd["input.input"] = take("synthesis.b4.const").unsqueeze(0)
    res_list = sorted({int(m.group(1)) for k in nv if (m := re.match(r"synthesis\.b(\d+)\.", k))})

    def layer(src: str, dst: str, noise_idx: int) -> None:
        sd[f"{dst}.conv.weight"] = take(f"{src}.weight").unsqueeze(0)
        sd[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        sd[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        sd[f"{dst}.noise.weight"] = take(f"{src}.noise_strength").reshape(1)
        sd[f"{dst}.activate.bias"] = take(f"{src}.bias")
        nc = take(f"{src}.noise_const")
        sd[f"noises.noise_{noise_idx}"] = nc.reshape(1, 1, *nc.shape[-2:])

    def torgb(src: str, dst: str) -> None:
        sd[f"{dst}.conv.weight"] = take(f"{src}.weight").unsqueeze(0)
        sd[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        sd[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        sd[f"{dst}.bias"] = take(f"{src}.bias").reshape(1, -1, 1, 1)

    layer("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for res in res_list:
        if res == 4:
            continue
        j = int(math.log2(res)) - 3
        layer(f"synthesis.b{res}.conv0", f"convs.{2 * j}", 2 * j + 1)
        layer(f"synthesis.b{res}.conv1", f"convs.{2 * j + 1}", 2 * j + 2)
        torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{j}")
    extra = [k for k in nv if k not in used and not k.endswith("resample_filter")]
    if extra:
        raise CheckpointError(
            f"{p}: unsupported G_ema tensors {extra[:4]} (conditional or non-'skip' generator?) -- only unconditional "
            "stylegan2-ada generators with the default 'skip' architecture are supported"
        )
    return sd, w_avg


def load_stylegan2_ada_pkl(path: str | Path, **kw) -> Generator:
    """Load ``G_ema`` from an NVIDIA stylegan2-ada(-pytorch) network pickle without executing its code."""
    p = _require(path)
    try:
        with open(p, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(f"{p}: not a readable network pickle ({msg}) -- supported: {SUPPORTED}") from None
    g = data.get("G_ema") if isinstance(data, dict) else None
    if not isinstance(g, _Inert):
        found = sorted(data)[:6] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{p}: no 'G_ema' network in pickle (found {found}) -- supported: {SUPPORTED}")
    c_dim = g.state.get("c_dim", 0)
    if c_dim:
        raise CheckpointError(
            f"{p}: conditional generator (c_dim={c_dim}) -- only unconditional generators are supported"
        )
    nv: dict[str, Tensor] = {}
    _collect(g, "", nv)
    sd, w_avg = _nvidia_to_rosinality(nv, p)
    extra: dict = {"conv_clamp": _conv_clamp(g, p)}
    mapping = dict(_walk(g)).get("mapping")
    beta = mapping.state.get("w_avg_beta") if mapping is not None else None
    if isinstance(beta, (int, float)):  # numpy float64 is a float
        extra["w_avg_beta"] = float(beta)
    return _from_state_dict(sd, p, w_avg=w_avg, **{**extra, **kw})
