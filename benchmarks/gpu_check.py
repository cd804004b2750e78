"""Exercise and time every CUDA path of the platform in one command (at most 8 minutes on one GPU).

    python benchmarks/gpu_check.py --out DIR                  # on a GPU machine (bash benchmarks/gpu_check.sh does
                                                              # the wheel install first; README "GPU" has the call)
    python benchmarks/gpu_check.py --device cpu --tiny        # the CPU dry run the test suite runs (seconds)

Writes ``gpu_check.json`` (every check: status ok / failed / timeout / skipped, seconds, metrics, the traceback of a
failure) and ``gpu_check.md`` (the same as a table, with machine and date) into ``--out`` (default ``$OUT``, else
``benchmarks/out/gpu_check``). Checks, in order:

- ``environment``: versions, the GPU, which optional packages import, whether faiss has a GPU index;
- ``lpips``: LPIPS-VGG forward on the device against the CPU value (same random backbone);
- ``pipeline_fp32`` / ``pipeline_16mixed`` / ``pipeline_bf16mixed``: the default pipeline (``autolabel run``) with
  ``trainer.accelerator=gpu`` in each precision, shortened (fewer kimg/steps/epochs), per-stage seconds;
- ``fit_gan_64`` / ``fit_gan_256``: ``autolabel fit gan`` with the default StyleGAN2 config, kimg per minute (64 px
  also in bf16-mixed and 16-mixed -- the GradScaler path -- side by side);
- ``labels_synthesize``: ``fit encoder`` (LPIPS on the device) -> ``fit labels`` -> ``synthesize``: seconds, images/s
  and peak memory (``torch.cuda.max_memory_allocated``) of each;
- ``hilander_meta_train``: ``autolabel fit hilander`` on labeled blob features (on a GPU also with
  ``trainer.deterministic=true``, which exact resume relies on);
- ``hilander_cluster_100k`` / ``hilander_cluster_1m``: hierarchical clustering of unseen-class blobs with the
  meta-trained model: kNN (faiss's GPU index where the installed faiss has one, else the exact chunked torch
  ``matmul + topk`` -- named in the output), GNN and decode seconds; kNN recall against exact CPU faiss on sampled
  queries, and the CPU faiss time on the same points;
- ``ddp_devices1``: ``autolabel run pipeline=hilander trainer.strategy=ddp trainer.devices=1`` (Lightning's DDP
  launcher, a one-rank NCCL process group on a GPU, gloo on the CPU).

Each check runs in its own process on a GPU (a CUDA error cannot leak into the next one) and in this process with
``--device cpu`` (start-up would dominate the dry run); a failure is recorded with its traceback and the rest still
run. ``--budget-s`` bounds the whole run: a check that could overrun it is cut at the budget, and checks that no longer
fit are skipped (each with its reason).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import glob
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "platform", ROOT):  # run from a checkout without an install
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


class CheckFailed(RuntimeError):
    """A check's own verdict (a wrong value, a non-zero exit code), as opposed to a crash; ``metrics`` keeps what
    was measured before it."""

    def __init__(self, message: str, metrics: dict | None = None):
        super().__init__(message)
        self.metrics = metrics


class Skip(Exception):
    """The check does not apply on this device."""


@dataclass
class Ctx:
    device: str  # "cuda" | "cpu"
    tiny: bool
    work: str  # scratch folder: run directories, datasets
    deadline: float = 0.0  # time.time() by which the check must end

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    def accel(self) -> str:
        return "gpu" if self.gpu else "cpu"

    def folder(self, name: str) -> Path:
        p = Path(self.work) / name
        p.mkdir(parents=True, exist_ok=True)
        return p


@dataclass
class Check:
    name: str
    fn: Callable[[Ctx], dict]
    cap_s: float  # most seconds it may take on a GPU
    min_s: float  # skipped when less than this is left of the budget


# ------------------------------------------------------------------------------------------------------ helpers


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        with contextlib.suppress(Exception):  # a measurement aid: never the reason a check fails
            torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


def run_cli(argv: list[str]) -> dict:
    """``autolabel ARGV`` in this process, with every ``pl.Trainer.fit`` timed; raises when it exits non-zero."""
    import pytorch_lightning as pl

    from pipelines.cli import main

    for name in [n for n in os.environ if n.startswith("AUTOLABEL_")]:
        del os.environ[name]  # a previous in-process run's directory must not leak into this one
    fits: list[dict] = []
    original = pl.Trainer.fit

    def timed_fit(self, *a, **kw):
        _sync()
        t0 = time.perf_counter()
        try:
            return original(self, *a, **kw)
        finally:
            _sync()
            fits.append({"stage": Path(self.default_root_dir).name, "seconds": round(time.perf_counter() - t0, 3),
                         "steps": int(self.global_step), "precision": str(self.precision),
                         "strategy": type(self.strategy).__name__, "device": str(self.strategy.root_device)})  # fmt: skip

    err = io.StringIO()
    pl.Trainer.fit = timed_fit
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(_Tee(sys.stderr, err)):
            rc = main(argv)
    finally:
        pl.Trainer.fit = original
    seconds = round(time.perf_counter() - t0, 3)
    if rc != 0:
        raise CheckFailed(f"autolabel {' '.join(argv[:2])} exited {rc}: {err.getvalue().strip()[-500:]}")
    return {"seconds": seconds, "fits": fits}


def _manifests(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(root.rglob("manifest.json")):
        data = json.loads(p.read_text())
        out[p.parent.name] = data
    return out


def _trainer_args(ctx: Ctx, precision: str = "32-true") -> list[str]:
    return [f"trainer.accelerator={ctx.accel()}", f"trainer.precision={precision}", "trainer.enable_progress_bar=false"]


# ------------------------------------------------------------------------------------------------------ checks


def check_environment(ctx: Ctx) -> dict:
    import importlib

    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda_runtime": torch.version.cuda, "cpu_count": os.cpu_count()}  # fmt: skip
    missing = []
    for mod in ("pytorch_lightning", "torch_geometric", "torchmetrics", "torchvision", "numpy", "scipy", "sklearn",
                "omegaconf", "lpips", "faiss", "submitit", "optuna"):  # fmt: skip
        try:
            out[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001 - record whatever stops the import
            out[mod] = f"missing ({type(e).__name__})"
            missing.append(mod)
    try:
        import faiss

        out["faiss_gpu_build"] = hasattr(faiss, "StandardGpuResources")
        out["faiss_num_gpus"] = int(faiss.get_num_gpus()) if out["faiss_gpu_build"] else 0
    except Exception:  # noqa: BLE001
        pass
    if ctx.gpu:
        if not torch.cuda.is_available():
            raise CheckFailed("torch sees no CUDA device")
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpus=torch.cuda.device_count(), capability=f"{p.major}.{p.minor}",
                   gpu_memory_gib=round(p.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported(),
                   cudnn=torch.backends.cudnn.version())  # fmt: skip
        with contextlib.suppress(Exception):  # a tuple in recent torch, an int in older ones
            v = torch.cuda.nccl.version()
            out["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        a = torch.randn(1024, 1024)
        ref = a @ a
        got = (a.cuda() @ a.cuda()).cpu()
        out["matmul_max_rel_err"] = float(((got - ref).abs().max() / ref.abs().max()).item())
    if missing:
        raise CheckFailed(f"missing packages: {', '.join(missing)} (run benchmarks/gpu_wheels.sh here, carry .whl)")
    return out


def check_lpips(ctx: Ctx) -> dict:
    import torch

    from autolabel.handsoff.lpips_weights import build_lpips, default_weight_path

    torch.manual_seed(0)
    net = "alex" if ctx.tiny else "vgg"
    model = build_lpips(net, random_backbone=True)  # the ImageNet file when present, else random (same on both)
    size, n = (32, 4) if ctx.tiny else (256, 16)
    a, b = torch.rand(n, 3, size, size) * 2 - 1, torch.rand(n, 3, size, size) * 2 - 1
    with torch.no_grad():
        cpu = model(a, b).flatten()
        dev_model = copy.deepcopy(model).to(ctx.device)
        ad, bd = a.to(ctx.device), b.to(ctx.device)
        got = dev_model(ad, bd).flatten()
        _sync()
        t0 = time.perf_counter()
        for _ in range(3):
            dev_model(ad, bd)
        _sync()
        per_batch = (time.perf_counter() - t0) / 3
    got = got.cpu()
    rel = float(((got - cpu).abs() / cpu.abs().clamp_min(1e-6)).max())
    out = {"net": net, "backbone": "imagenet" if default_weight_path(net).is_file() else "random", "batch": n,
           "size": size,
           "cpu_mean": round(float(cpu.mean()), 6), "device_mean": round(float(got.mean()), 6),
           "max_rel_diff": rel, "device_pairs_per_s": round(n / per_batch, 1)}  # fmt: skip
    if not rel < 1e-2:
        raise CheckFailed(f"LPIPS on {ctx.device} differs from the CPU value by {rel:.2e} (relative)")
    return out


# the shipped default pipeline, shortened so that three precisions fit the GPU budget: same models and data, fewer
# kimg / steps / epochs (the shapes of every tensor are the default's)
GPU_PIPELINE = [
    "gan.kimg=1", "encoder.train.phase1_steps=60", "encoder.train.finetune_steps=10", "labels.train.max_steps=60",
    "synthesis.n=100", "downstream.steps=100", "downstream.val_every=25", "classifier.max_epochs=5", "hilander.max_epochs=20",
    "hilander.baselines=[kmeans]",
]  # fmt: skip


def _pipeline(precision: str) -> Callable[[Ctx], dict]:
    def check(ctx: Ctx) -> dict:
        if not ctx.gpu and precision == "16-mixed":
            raise Skip("16-mixed (fp16 autocast + GradScaler) needs CUDA; Lightning refuses it on the CPU")
        if not ctx.gpu and precision == "bf16-mixed":
            raise Skip("bf16-mixed is checked on the GPU only (the CPU dry run keeps to fp32 to stay fast)")
        root = ctx.folder(f"pipeline_{precision}")
        from pipelines.definitions import TINY_OVERRIDES

        sizes = [*TINY_OVERRIDES, "until_stage=synthesis"] if ctx.tiny else GPU_PIPELINE  # tiny: the rest runs in ddp_*
        _reset_peak()
        res = run_cli(["run", *sizes, *_trainer_args(ctx, precision), "progress=false", f"run.root={root}"])
        (run,) = [p for p in (root / "handsoff_then_hilander").iterdir() if p.is_dir()]
        summary = json.loads((run / "summary.json").read_text())
        stages = {name: st["seconds"] for name, st in summary.get("stages", {}).items()}
        fit_precisions = sorted({f["precision"] for f in res["fits"]})
        devices = sorted({f["device"] for f in res["fits"]})
        if ctx.gpu and not all(d.startswith("cuda") for d in devices):
            raise CheckFailed(f"training ran on {devices}, not on the GPU")
        return {"seconds": res["seconds"], "stage_seconds": stages, "trainer_precisions": fit_precisions,
                "train_devices": devices, "peak_gpu_gib": _peak_gib(),
                **{k: summary.get(k) for k in ("miou_synthetic", "miou_real_few", "pairwise_f", "bcubed_f", "nmi")}}  # fmt: skip

    return check


def _render(ctx: Ctx, name: str, n: int, size: int) -> Path:
    from autolabel.data.procedural import make_shapes_dataset

    out = Path(ctx.work) / name
    if not (out / "images").is_dir():
        make_shapes_dataset(out, n, size=size, seed=0)
    return out


def _gan_run(ctx: Ctx, images: Path, res_px: int, kimg: float, model: list[str], precision: str, root: Path) -> dict:
    """One ``autolabel fit gan``: kimg shown, training seconds (``Trainer.fit`` only), kimg per minute, peak memory."""
    _reset_peak()
    res = run_cli(["fit", "gan", f"images={images / 'images'}", f"gan.resolution={res_px}", f"kimg={kimg}", *model,
                   *_trainer_args(ctx, precision), f"run.root={root}"])  # fmt: skip
    metrics = _manifests(root)["gan"]["metrics"]
    shown = metrics["images"] * metrics["epochs"] / 1000.0
    fit_s = sum(f["seconds"] for f in res["fits"])
    for key in ("train/d_loss", "train/g_loss"):
        if key in metrics and not abs(metrics[key]) < float("inf"):
            raise CheckFailed(f"{precision}: {key} is {metrics[key]}")
    return {"kimg": round(shown, 3), "fit_seconds": round(fit_s, 2), "kimg_per_min": round(shown / fit_s * 60, 3),
            "steps": sum(f["steps"] for f in res["fits"]), "peak_gpu_gib": _peak_gib(),
            "d_loss": metrics.get("train/d_loss"), "g_loss": metrics.get("train/g_loss")}  # fmt: skip


def _fit_gan(resolution: int) -> Callable[[Ctx], dict]:
    def check(ctx: Ctx) -> dict:
        res_px = resolution
        if ctx.tiny:  # 16 and 32 px stand in for 64 and 256
            res_px = 16 if resolution <= 64 else 32
            images = _render(ctx, f"shapes{res_px}", 8, res_px)
            model = ["gan.z_dim=16", "gan.w_dim=16", "gan.n_mapping=1", "gan.channel_max=8", "gan_train.batch_size=4"]
            kimg = 0.008
        else:  # the default StyleGAN2 config (512 channels, 8 mapping layers) at this resolution
            images = _render(ctx, f"shapes{resolution}", 256 if resolution <= 64 else 128, resolution)
            model = [f"gan_train.batch_size={16 if resolution <= 64 else 8}"]
            kimg = 2.0 if resolution <= 64 else 0.4
        root = ctx.folder(f"fit_gan_{resolution}")
        out: dict[str, Any] = {
            "resolution": res_px,
            **_gan_run(ctx, images, res_px, kimg, model, "32-true", root / "fp32"),
        }
        if ctx.gpu and resolution <= 64:  # the AMP step (GradScaler with 16-mixed, manual optimization) side by side
            errors = []
            for precision in ("bf16-mixed", "16-mixed"):
                try:
                    amp = _gan_run(ctx, images, res_px, kimg, model, precision, root / precision)
                    out[precision] = amp
                    out[f"{precision}_speedup_vs_fp32"] = round(amp["kimg_per_min"] / out["kimg_per_min"], 2)
                except Exception as e:  # noqa: BLE001 - record it, measure the other precision, fail at the end
                    out[precision] = {"error": f"{type(e).__name__}: {e}"[:1000], "traceback": traceback.format_exc()}
                    errors.append(precision)
            if errors:
                raise CheckFailed(f"fit gan failed in {', '.join(errors)} (tracebacks in metrics)", out)
        return out

    return check


def check_labels_synthesize(ctx: Ctx) -> dict:
    import torch

    from autolabel.gan import Generator, save_generator

    size = 32 if ctx.tiny else 64  # LPIPS-AlexNet needs >= 32 px
    data = _render(ctx, f"labeled{size}", 8 if ctx.tiny else 16, size)
    root = ctx.folder("labels_synthesize")
    torch.manual_seed(0)
    gkw = dict(resolution=size, z_dim=16, w_dim=16, n_mapping=1, channel_max=8) if ctx.tiny else dict(resolution=size)
    gen_path = save_generator(Generator(**gkw), root / "generator.pt")  # random weights: the CUDA path, not quality
    small = ["encoder.width=8", "encoder.max_width=16"] if ctx.tiny else []
    steps = ["encoder_train.phase1_steps=3", "encoder_train.finetune_steps=2", "encoder_train.batch_size=4"] if ctx.tiny \
        else ["encoder_train.phase1_steps=50", "encoder_train.finetune_steps=10", "encoder_train.batch_size=8"]  # fmt: skip
    out: dict[str, Any] = {}
    _reset_peak()
    enc = run_cli(["fit", "encoder", f"generator={gen_path}", f"images={data / 'images'}", *small, *steps,
                   "encoder_train.lpips_weight=1.0", f"encoder_train.lpips_net={'alex' if ctx.tiny else 'vgg'}",
                   "lpips_random=true", *_trainer_args(ctx),
                   f"run.root={root / 'runs'}"])  # fmt: skip
    out.update(encoder_fit_seconds=round(sum(f["seconds"] for f in enc["fits"]), 2), encoder_peak_gpu_gib=_peak_gib())
    enc_ckpt = _manifests(root / "runs" / "encoder")["encoder"]["outputs"]["checkpoint"]
    lab = ["label_generator.n_members=2", "label_generator.hidden=[8,8]", "label_train.max_steps=3",
           "label_train.pixels_per_image=32", "label_train.batch_pixels=32"] if ctx.tiny \
        else ["label_train.max_steps=100"]  # fmt: skip
    _reset_peak()
    labels = run_cli(["fit", "labels", f"generator={gen_path}", f"encoder={enc_ckpt}", f"labeled={data}", *lab,
                      *_trainer_args(ctx), f"run.root={root / 'runs'}"])  # fmt: skip
    fit = labels["fits"][-1]
    out.update(labels_fit_seconds=fit["seconds"], labels_steps=fit["steps"], labels_peak_gpu_gib=_peak_gib())
    ckpt = _manifests(root / "runs" / "labels")["labels"]["outputs"]["checkpoint"]
    n = 8 if ctx.tiny else 256
    _reset_peak()
    syn = run_cli(["synthesize", f"checkpoint={ckpt}", f"n={n}", f"out={root / 'synthetic'}", "batch_size=16",
                   "drop_least_uncertain=1", f"accelerator={ctx.device}", "progress=false"])  # fmt: skip
    kept = [line for line in (root / "synthetic" / "manifest.jsonl").read_text().splitlines() if line.strip()]
    if len(kept) != n:
        raise CheckFailed(f"synthesize kept {len(kept)} images, asked for {n}")
    out.update(synthesize_seconds=syn["seconds"], synthesize_images=n,
               synthesize_images_per_s=round(n / syn["seconds"], 2), synthesize_peak_gpu_gib=_peak_gib())  # fmt: skip
    return out


def _blob_sizes(ctx: Ctx) -> dict:
    return {"dim": 16, "spread": 0.12, "per_class": 20} if ctx.tiny else {"dim": 128, "spread": 0.05, "per_class": 100}


def check_hilander_meta_train(ctx: Ctx) -> dict:
    import numpy as np

    from autolabel.data.synthetic import make_blob_features

    s = _blob_sizes(ctx)
    n_classes = 20 if ctx.tiny else 200
    x, y = make_blob_features(n_classes, s["per_class"], s["dim"], s["spread"], seed=0)
    root = ctx.folder("hilander_meta_train")
    np.savez(root / "meta.npz", features=x, labels=y)
    size = ["model.hidden=16", "trainer.max_epochs=2", "train.k_list=[5]", "train.levels_list=[2]"] if ctx.tiny \
        else ["model.hidden=512", "trainer.max_epochs=30", "train.k_list=[10,5]", "train.levels_list=[2,3]"]  # fmt: skip
    _reset_peak()
    res = run_cli(["fit", "hilander", f"train_features={root / 'meta.npz'}", *size, *_trainer_args(ctx),
                   f"run.root={root / 'runs'}"])  # fmt: skip
    fit = res["fits"][-1]
    m = _manifests(root / "runs")["hilander"]
    out = {"points": len(x), "dim": s["dim"], "fit_seconds": fit["seconds"], "steps": fit["steps"],
           "device": fit["device"], "peak_gpu_gib": _peak_gib(), "checkpoint": m["outputs"]["checkpoint"],
           **{k: round(v, 4) for k, v in m["metrics"].items() if k.startswith("train/")}}  # fmt: skip
    if ctx.gpu:  # exact resume rests on determinism: do the scatter / sparse kernels allow it on CUDA?
        try:
            det = run_cli(["fit", "hilander", f"train_features={root / 'meta.npz'}", *size, "trainer.max_epochs=2",
                           "trainer.deterministic=true", *_trainer_args(ctx), f"run.root={root / 'deterministic'}"])  # fmt: skip
            out["deterministic_fit_seconds"] = det["fits"][-1]["seconds"]
        except Exception as e:  # noqa: BLE001 - the main measurement stands; the check still fails below
            raise CheckFailed(f"trainer.deterministic=true failed on CUDA: {type(e).__name__}: {e}"[:1500], out) from e
    return out


def gpu_knn_backend(device: str) -> tuple[str, Callable, str | None]:
    """``(name, fn(features, k, rows=None) -> (nbrs, sims), note)``: faiss's GPU index when the installed faiss has one
    that answers a smoke search like the exact CPU search, else the exact torch kNN on ``device``."""
    import numpy as np

    from autolabel.hilander.search import knn_search, num_gpus
    from autolabel.hilander.torch_knn import knn_search_torch

    def torch_fn(x, k, rows=None):
        return knn_search_torch(x, k, rows=rows, device=device)

    torch_name = f"torch exact matmul+topk ({device})"
    if device != "cuda":
        return torch_name, torch_fn, None
    try:
        if num_gpus() < 1:
            return torch_name, torch_fn, "the installed faiss has no GPU index (faiss-cpu, or no GPU it can use)"
        from autolabel.data.synthetic import random_unit_features

        x = random_unit_features(512, 32, seed=0)
        if not np.array_equal(knn_search(x, 5, method="flat", use_gpu=True)[0], knn_search_torch(x, 5)[0]):
            return torch_name, torch_fn, "faiss GPU flat search disagrees with exact search on a smoke test"
    except Exception as e:  # noqa: BLE001 - any failure of the GPU build means: use torch
        return torch_name, torch_fn, f"faiss GPU unusable: {type(e).__name__}: {str(e)[:200]}"

    def faiss_fn(x, k, rows=None):
        nbrs, sims = knn_search(x, k, use_gpu=True)
        return (nbrs, sims) if rows is None else (nbrs[rows], sims[rows])

    return "faiss GPU (search.knn_search, sharded; IVF above 50k points)", faiss_fn, None


def _exact_cpu_rows(x, k: int, rows) -> tuple[Any, float]:
    """Exact CPU faiss neighbours of ``x[rows]`` (self dropped by id) and the seconds it took."""
    import faiss
    import numpy as np

    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, ids = index.search(x[rows], k + 1)
    sec = time.perf_counter() - t0
    keep = ids != np.asarray(rows)[:, None]
    out = np.stack([row[m][:k] for row, m in zip(ids, keep)])
    return out, sec


def _cluster(n_points: int) -> Callable[[Ctx], dict]:
    def check(ctx: Ctx) -> dict:
        import numpy as np
        import torch

        import autolabel.hilander.hierarchy as hierarchy
        from autolabel.data.synthetic import make_blob_features
        from autolabel.hilander.checkpoint import load_lander
        from autolabel.hilander.lander import LANDER
        from autolabel.hilander.search import knn_recall, knn_search
        from autolabel.hilander.torch_knn import knn_search_torch
        from autolabel.metrics.clustering import evaluate_clustering

        s = _blob_sizes(ctx)
        n = {100_000: 1000, 1_000_000: 4000}[n_points] if ctx.tiny else n_points
        x, y = make_blob_features(n // s["per_class"], s["per_class"], s["dim"], s["spread"], seed=1)  # unseen classes
        x = x.astype(np.float32)
        ckpts = glob.glob(str(Path(ctx.work) / "hilander_meta_train" / "runs" / "**" / "last.ckpt"), recursive=True)
        if ckpts:
            model, _ = load_lander(ckpts[0])
            trained = True
        else:  # the meta-training check failed or was skipped: measure cost with random weights
            torch.manual_seed(0)
            model, trained = LANDER(s["dim"], hidden=16 if ctx.tiny else 512), False
        k = 10
        name, fn, note = gpu_knn_backend(ctx.device)
        calls: list[tuple[float, int]] = []
        first: dict[str, Any] = {}

        def patched(features, kk, **_):
            _sync()
            t0 = time.perf_counter()
            nbrs, sims = fn(np.ascontiguousarray(features, dtype=np.float32), kk)
            _sync()
            calls.append((time.perf_counter() - t0, len(features)))
            if not first:
                first["nbrs"] = nbrs
            return nbrs, sims

        original = hierarchy.knn_search
        hierarchy.knn_search = patched
        _reset_peak()
        try:
            t0 = time.perf_counter()
            res = hierarchy.cluster_pool(model, x, k=k, tau=0.5, levels=3, device=ctx.device, progress=False)
            total = time.perf_counter() - t0
        finally:
            hierarchy.knn_search = original
        rows = np.random.default_rng(0).choice(n, min(n, 2000), replace=False)
        exact, cpu_rows_s = _exact_cpu_rows(x, k, rows)
        out: dict[str, Any] = {
            "points": n, "dim": s["dim"], "model": "meta-trained" if trained else "untrained (cost only)",
            "knn_backend": name, "seconds_total": round(total, 2),
            **{f"seconds_{key}": round(v, 3) for key, v in res.seconds.items()},
            "knn_level0_seconds": round(calls[0][0], 3), "levels": len(res.levels), "clusters": res.n_clusters,
            "recall_at_10_vs_exact_cpu": round(knn_recall(first["nbrs"][rows], exact), 4),
            "cpu_faiss_flat_seconds_per_1k_queries": round(cpu_rows_s / len(rows) * 1000, 3),
            "peak_gpu_gib": _peak_gib(),
        }  # fmt: skip
        if note:
            out["faiss_gpu_note"] = note
        out.update({k2: round(v, 4) for k2, v in evaluate_clustering(y, res.labels).items() if k2 in
                    ("pairwise_f", "bcubed_f", "nmi")})  # fmt: skip
        if n <= 100_000:  # the library's CPU default on the same points (exact flat faiss), for the ratio
            t0 = time.perf_counter()
            cpu_nbrs, _ = knn_search(x, k, use_gpu=False)
            out["cpu_faiss_level0_seconds"] = round(time.perf_counter() - t0, 3)
            out["knn_speedup_vs_cpu_faiss"] = round(out["cpu_faiss_level0_seconds"] / max(calls[0][0], 1e-9), 2)
            out["recall_at_10_full_vs_cpu_faiss"] = round(knn_recall(first["nbrs"], cpu_nbrs), 4)
        if ctx.gpu and not name.startswith("torch"):  # faiss GPU chosen: also measure the torch path on the same points
            _sync()
            t0 = time.perf_counter()
            tn, _ = knn_search_torch(x, k, device="cuda")
            out["torch_knn_level0_seconds"] = round(time.perf_counter() - t0, 3)
            out["torch_knn_recall_vs_exact_cpu"] = round(knn_recall(tn[rows], exact), 4)
        if out["recall_at_10_vs_exact_cpu"] < (0.999 if name.startswith("torch") else 0.5):
            raise CheckFailed(f"kNN recall {out['recall_at_10_vs_exact_cpu']} against exact CPU search ({name})", out)
        return out

    return check


def check_ddp_devices1(ctx: Ctx) -> dict:
    import torch.distributed as dist

    root = ctx.folder("ddp_devices1")
    size = ["data.per_class=16", "classifier.max_epochs=1", "classifier.model.image_size=8", "classifier.model.width=8",
            "classifier.model.depth=1", "classifier.model.embed_dim=16", "classifier.model.batch_size=8",
            "hilander.max_epochs=2", "hilander.model.hidden=16", "hilander.train.k_list=[4]",
            "hilander.train.levels_list=[2]", "hilander.cluster.k=4"] if ctx.tiny \
        else ["data.per_class=100", "classifier.max_epochs=5", "hilander.max_epochs=20"]  # fmt: skip
    try:
        res = run_cli(["run", "pipeline=hilander", "data.source=digits", *size, "hilander.baselines=[kmeans]",
                       *_trainer_args(ctx), "trainer.devices=1", "trainer.strategy=ddp", "progress=false",
                       f"run.root={root}"])  # fmt: skip
        backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # in-process runs: leave no group behind for the next check
    strategies = sorted({f["strategy"] for f in res["fits"]})
    if strategies != ["DDPStrategy"]:
        raise CheckFailed(f"trained with {strategies}, expected DDPStrategy")
    (run,) = [p for p in (root / "hilander").iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    return {"seconds": res["seconds"], "strategies": strategies, "process_group_backend": backend,
            "train_devices": sorted({f["device"] for f in res["fits"]}), "nmi": summary.get("nmi")}  # fmt: skip


CHECKS = [
    Check("environment", check_environment, 60, 5),
    Check("lpips", check_lpips, 60, 10),
    Check("pipeline_fp32", _pipeline("32-true"), 100, 30),
    Check("pipeline_16mixed", _pipeline("16-mixed"), 100, 30),
    Check("pipeline_bf16mixed", _pipeline("bf16-mixed"), 100, 30),
    Check("fit_gan_64", _fit_gan(64), 90, 20),
    Check("fit_gan_256", _fit_gan(256), 75, 20),
    Check("labels_synthesize", check_labels_synthesize, 90, 30),
    Check("hilander_meta_train", check_hilander_meta_train, 60, 20),
    Check("hilander_cluster_100k", _cluster(100_000), 60, 20),
    Check("hilander_cluster_1m", _cluster(1_000_000), 150, 45),
    Check("ddp_devices1", check_ddp_devices1, 60, 20),
]


# ------------------------------------------------------------------------------------------------------ driver


def _run_in_process(check: Check, ctx: Ctx) -> dict:
    t0 = time.perf_counter()
    try:
        metrics = check.fn(ctx)
        status, extra = "ok", {"metrics": metrics}
    except Skip as e:
        status, extra = "skipped", {"reason": str(e)}
    except Exception as e:  # noqa: BLE001 - every failure is recorded, the next check still runs
        status, extra = "failed", {"error": f"{type(e).__name__}: {e}"[:2000], "traceback": traceback.format_exc()}
        if getattr(e, "metrics", None):
            extra["metrics"] = e.metrics
    return {"status": status, "seconds": round(time.perf_counter() - t0, 2), **extra}


def _run_isolated(check: Check, ctx: Ctx, timeout: float, log_dir: Path, all_logs: Path | None = None) -> dict:
    """The check in a fresh Python process (its own CUDA context), killed with its process group after ``timeout``."""
    res_path = log_dir / f"{check.name}.result.json"
    log_path = log_dir / f"{check.name}.log"
    res_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-one", check.name, "--ctx", json.dumps(asdict(ctx)),
           "--result", str(res_path)]  # fmt: skip
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = round(time.perf_counter() - t0, 2)
    text = log_path.read_text(errors="replace")
    tail = text[-3000:]
    if all_logs is not None:  # every check's output in one file that comes back with the table
        with open(all_logs, "a") as f:
            f.write(f"\n===== {check.name} =====\n{text[-200_000:]}")
    if res_path.is_file():
        out = json.loads(res_path.read_text())
        out["process_seconds"] = seconds  # including the child's start-up (imports)
        if out["status"] == "failed":
            out["log_tail"] = tail
        return out
    if proc.returncode == -signal.SIGKILL and seconds >= timeout - 1:
        return {"status": "timeout", "seconds": seconds, "error": f"cut after {timeout:.0f} s", "log_tail": tail}
    return {"status": "failed", "seconds": seconds, "error": f"the check's process died (exit {proc.returncode})",
            "log_tail": tail}  # fmt: skip


def _headline(name: str, r: dict) -> str:
    if r["status"] != "ok":
        return (r.get("reason") or r.get("error") or "").replace("|", "/").replace("\n", " ")[:160]
    m = r.get("metrics", {})
    keys = {
        "environment": ("gpu", "torch", "cuda_runtime", "faiss", "faiss_num_gpus"),
        "lpips": ("backbone", "max_rel_diff", "device_pairs_per_s"),
        "labels_synthesize": ("labels_fit_seconds", "labels_peak_gpu_gib", "synthesize_images_per_s",
                              "synthesize_peak_gpu_gib"),
        "hilander_meta_train": ("points", "fit_seconds", "steps", "peak_gpu_gib"),
        "ddp_devices1": ("seconds", "process_group_backend", "nmi"),
    }.get(name)  # fmt: skip
    if keys is None and name.startswith("pipeline"):
        keys = ("seconds", "trainer_precisions", "miou_synthetic", "nmi", "peak_gpu_gib")
    if keys is None and name.startswith("fit_gan"):
        keys = ("resolution", "kimg", "fit_seconds", "kimg_per_min", "peak_gpu_gib", "bf16-mixed_speedup_vs_fp32",
                "16-mixed_speedup_vs_fp32")  # fmt: skip
    if keys is None and name.startswith("hilander_cluster"):
        keys = ("points", "knn_backend", "seconds_knn", "seconds_gnn", "seconds_decode", "recall_at_10_vs_exact_cpu",
                "cpu_faiss_flat_seconds_per_1k_queries", "knn_speedup_vs_cpu_faiss", "bcubed_f")  # fmt: skip
    parts = [f"{k} {m[k]}" for k in keys or () if m.get(k) is not None]
    return "; ".join(parts).replace("|", "/")


def write_reports(out_dir: Path, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    env = report["checks"].get("environment", {}).get("metrics", {})
    machine = env.get("gpu") or report["machine"]["processor"]
    lines = [f"GPU check, {report['date']}, {machine}, {report['machine']['cpu_count']} CPU cores, device "
             f"{report['device']}{' (tiny)' if report['tiny'] else ''}, commit {report['commit']}, "
             f"{report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget", "",
             "| check | status | seconds | measured |", "|---|---|---|---|"]  # fmt: skip
    for name, r in report["checks"].items():
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', 0):.1f} | {_headline(name, r)} |")
    (out_dir / "gpu_check.md").write_text("\n".join(lines) + "\n")


def _commit() -> str:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"  # fmt: skip
    except Exception:  # noqa: BLE001 - no git on the machine
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU dry run)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "out" / "gpu_check"))
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    ap.add_argument("--budget-s", type=float, default=None, help="whole-run limit (default 450 s, --tiny 600 s)")
    ap.add_argument("--only", nargs="+", default=None, help="run only these checks")
    ap.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                    help="each check in its own process (auto: on a GPU)")  # fmt: skip
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    ap.add_argument("--ctx", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    by_name = {c.name: c for c in CHECKS}
    if a.run_one:  # child process of an isolated check
        r = _run_in_process(by_name[a.run_one], Ctx(**json.loads(a.ctx)))
        Path(a.result).write_text(json.dumps(r, default=str))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # no interpreter teardown: a hanging NCCL/faiss/CUDA shutdown must not eat the time budget
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    unknown = sorted(set(a.only or ()) - set(by_name))
    if unknown:
        ap.error(f"unknown checks {unknown}; choose from {list(by_name)}")
    budget = a.budget_s if a.budget_s is not None else (600.0 if a.tiny else 450.0)
    isolate = a.isolate == "yes" or (a.isolate == "auto" and device == "cuda")
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check_checks.log").unlink(missing_ok=True)
    report: dict[str, Any] = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "device": device, "tiny": a.tiny,
        "budget_s": budget, "isolated": isolate, "commit": _commit(),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "node": platform.node()},
        "checks": {},
    }  # fmt: skip
    start = time.time()
    for check in CHECKS:
        if a.only and check.name not in a.only:
            continue
        left = budget - (time.time() - start)
        if left < check.min_s:
            r = {
                "status": "skipped",
                "seconds": 0.0,
                "reason": f"time budget: {left:.0f} s left, needs {check.min_s:.0f}",
            }
        else:
            timeout = min(left, check.cap_s) if device == "cuda" else left
            ctx = Ctx(device=device, tiny=a.tiny, work=str(work), deadline=time.time() + timeout)
            print(f"[gpu_check] {check.name} (up to {timeout:.0f} s) ...", flush=True)
            if isolate:
                r = _run_isolated(check, ctx, timeout, work, out_dir / "gpu_check_checks.log")
            else:
                r = _run_in_process(check, ctx)
        report["checks"][check.name] = r
        print(f"[gpu_check] {check.name}: {r['status']} in {r.get('seconds', 0):.1f} s "
              f"{_headline(check.name, r)}", flush=True)  # fmt: skip
        report["seconds"] = round(time.time() - start, 1)
        write_reports(out_dir, report)  # after every check: a run cut short still leaves its table
    report["seconds"] = round(time.time() - start, 1)
    write_reports(out_dir, report)
    print(f"[gpu_check] wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}", flush=True)
    print((out_dir / "gpu_check.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
