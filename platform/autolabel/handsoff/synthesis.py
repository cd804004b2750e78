"""HandsOff synthesis: sample latents, generate images + labels with the ensemble, filter DatasetGAN-style, write shards.

Layout of ``out_dir``: ``images/{id}.png``, ``labels/{id}.png`` (segmentation class indices), ``labels/{id}.json``
(keypoints: x/y in pixels of the image + confidence) or ``labels/{id}.npy`` (depth), optional ``uncertainty/{id}.npy``
(per-pixel map), ``records/{id}.json`` (one per finished candidate; written last, so a sample is complete iff its
record exists), ``manifest.rank{r}.jsonl`` (all candidates of rank r), ``plan.json`` and, after
:func:`merge_manifests`, ``manifest.jsonl`` (kept samples, sorted by id).

Every label is written at the IMAGE resolution, pixel-aligned with ``images/{id}.png``, whatever the working
resolution the ensemble runs at: masks are resized nearest-exact, depth and uncertainty bilinearly, keypoints are
mapped with :func:`~autolabel.handsoff.hypercolumns.rescale_coords` (pixel centres aligned).

``plan.json`` records the settings and content fingerprints (SHA-256 of the weights) of the label generator and the
generator, plus the label checkpoint's path, size and mtime when given; rerunning into the same folder with another
checkpoint or generator is refused instead of silently reusing the old candidates.

Sample ``i`` (its id is ``f"{i:08d}"``) draws z from a generator seeded with ``(seed, i)`` and, with
``noise_mode="random"`` (the default), its StyleGAN noise inputs from another seeded by ``(seed, i)``, so any
rank/resume order produces identical files; rank ``r`` of ``W`` takes ``i = r, r + W, ...``.

Filtering (DatasetGAN): ``n_total = ceil(n / (1 - filter_fraction))`` candidates are generated; sorted by image
uncertainty, the ``drop_least`` least uncertain and the ``n_total - n - drop_least`` most uncertain are dropped. The
reference drops 30 least uncertain of ~3000 samples (10% of the 300 dropped); for small runs ``drop_least`` is scaled
down to ``min(drop_least_uncertain, (n_total - n) // 10)`` so it never eats the whole drop budget (0 when < 10 drops).
Filtering needs every rank's scores, so it happens in :func:`merge_manifests` (rank 0 after all ranks finished;
``synthesize`` calls it itself when ``world_size == 1``); dropped candidates' files are deleted there.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from autolabel.engine.io import atomic_save_npy, atomic_write_bytes, atomic_write_text, read_json, write_json
from autolabel.engine.paths import check_output_dir
from autolabel.errors import ConfigError, DataError
from autolabel.handsoff.hypercolumns import HypercolumnExtractor, rescale_coords
from autolabel.handsoff.label_generator import LabelGeneratorEnsemble, decode_keypoints, image_uncertainty

LABEL_EXT = {"segmentation": "png", "keypoints": "json", "depth": "npy"}


_RECORDED = ("label_checkpoint", "classes", "keypoint_names", "skeleton")  # in plan.json for people, not compared


def _names(names: dict | None) -> dict:
    return {k: list(names[k]) for k in ("classes", "keypoint_names", "skeleton") if names and names.get(k) is not None}


def filter_plan(n: int, filter_fraction: float = 0.1, drop_least_uncertain: int = 30) -> dict[str, int]:
    """How many candidates to generate and drop so that ``n`` remain (see module docstring)."""
    if n < 1:
        raise ConfigError(f"n={n} must be >= 1 (number of labeled images to keep)")
    if not 0.0 <= filter_fraction < 1.0:
        raise ConfigError(f"filter_fraction={filter_fraction} must be in [0, 1) (0.1 = DatasetGAN)")
    if drop_least_uncertain < 0:
        raise ConfigError(f"drop_least_uncertain={drop_least_uncertain} must be >= 0 (30 = DatasetGAN)")
    n_total = int(math.ceil(n / (1.0 - filter_fraction) - 1e-9))
    n_drop = n_total - n
    drop_least = min(int(drop_least_uncertain), n_drop // 10)
    return {"n": int(n), "n_total": n_total, "drop_least": drop_least, "drop_most": n_drop - drop_least}


def filter_indices(scores: Tensor | np.ndarray | list, n_keep: int, drop_least: int) -> np.ndarray:
    """Positions kept by DatasetGAN filtering: sort ascending by score, skip ``drop_least``, keep the next ``n_keep``."""
    s = np.asarray(scores, dtype=np.float64)
    if n_keep + drop_least > len(s):
        raise DataError(
            f"cannot keep {n_keep} after dropping {drop_least} of {len(s)} candidates: generate more samples"
        )
    order = np.argsort(s, kind="stable")
    return np.sort(order[drop_least : drop_least + n_keep])


def sample_seed(seed: int, index: int) -> int:
    """Deterministic per-sample seed from ``(seed, index)``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] & ((1 << 63) - 1))


def sample_z(seed: int, index: int, z_dim: int) -> Tensor:
    """The latent z of sample ``index`` ([z_dim], float32)."""
    g = torch.Generator().manual_seed(sample_seed(seed, index))
    return torch.randn(z_dim, generator=g)


def sample_noise(seed: int, index: int, shapes: list[tuple[int, int]]) -> list[Tensor]:
    """The generator's per-layer noise inputs of sample ``index`` (``[1, H, W]`` each, float32), drawn from its own
    seed (independent of the latent z's draws): the same sample gets the same noise in any batch, shard or resume."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), int(index), 1]).generate_state(1)[0]))
    return [torch.randn(1, h, w, generator=g) for h, w in shapes]


def fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes and bytes; device independent)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_identity(path: str | Path) -> dict:
    """Path, size and mtime of a file (what ``plan.json`` records about the label checkpoint, for humans)."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _to_image_grid(pred: dict[str, Tensor], task: str, working: int, size: int) -> dict[str, Tensor]:
    """One image's predictions resized from the working grid to the ``size`` image grid (see the module docstring)."""
    if working == size:
        return pred
    out = dict(pred)

    def bilinear(x: Tensor) -> Tensor:
        return F.interpolate(x.float()[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]

    out["uncertainty"] = bilinear(pred["uncertainty"])
    if task == "segmentation":
        lab = pred["label"].float()[None, None]
        out["label"] = F.interpolate(lab, size=(size, size), mode="nearest-exact")[0, 0].long()
    elif task == "depth":
        out["depth"] = bilinear(pred["depth"])
    return out


def write_label(out: Path, sid: str, task: str, pred: dict[str, Tensor], working: int, size: int,
                n_outputs: int) -> dict[str, int]:  # fmt: skip
    """Write one image's label, already on the image grid (:func:`_to_image_grid`), into ``out/labels/``: a class-index
    PNG (segmentation), keypoints JSON at ``size`` px, or a depth ``.npy``. Returns the class histogram (segmentation;
    empty otherwise). Synthesis and ``autolabel label`` write labels through here."""
    if task == "segmentation":
        lab = pred["label"].cpu().numpy()
        dtype = np.uint8 if n_outputs <= 256 else np.uint16
        atomic_write_bytes(out / "labels" / f"{sid}.png", _png_bytes(lab.astype(dtype)))
        cls, cnt = np.unique(lab, return_counts=True)
        return {str(int(c)): int(k) for c, k in zip(cls, cnt)}
    if task == "keypoints":
        coords, conf = decode_keypoints(pred["heatmap"].permute(2, 0, 1)[None])
        coords = rescale_coords(coords[0].float().cpu(), working, size).clamp(0, size - 1)
        kps = [{"x": float(c[0]), "y": float(c[1]), "confidence": float(s)} for c, s in zip(coords, conf[0])]
        body = {"resolution": size, "keypoints": kps, "working_resolution": working}
        atomic_write_text(out / "labels" / f"{sid}.json", json.dumps(body) + "\n")
        return {}
    atomic_save_npy(out / "labels" / f"{sid}.npy", pred["depth"].float().cpu().numpy())
    return {}


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _image_uint8(img: Tensor) -> np.ndarray:
    x = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


@torch.no_grad()
def label_pixels(ensemble: LabelGeneratorEnsemble, extractor: HypercolumnExtractor, feats: list[Tensor],
                 chunk_pixels: int) -> list[dict[str, Tensor]]:  # fmt: skip
    """Run the ensemble over every pixel of each image, in chunks of pixels (never full-width full-res maps)."""
    r = extractor.resolution
    b = feats[0].shape[0]
    dev = feats[0].device
    results = []
    for j in range(b):
        fj = [f[j : j + 1] for f in feats]
        parts: dict[str, list[Tensor]] = {}
        for start in range(0, r * r, chunk_pixels):
            idx = torch.arange(start, min(start + chunk_pixels, r * r), device=dev)
            x = extractor.gather(fj, idx)[0]
            for k, v in ensemble.predict(x).items():
                parts.setdefault(k, []).append(v)
        results.append({k: torch.cat(v).reshape(r, r, *v[0].shape[1:]) for k, v in parts.items()})
    return results


def synthesize(
    generator: nn.Module,
    ensemble: LabelGeneratorEnsemble,
    extractor: HypercolumnExtractor,
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    truncation_psi: float = 0.7,
    noise_mode: str = "random",
    batch_size: int = 8,
    filter_fraction: float = 0.1,
    drop_least_uncertain: int = 30,
    rank: int = 0,
    world_size: int = 1,
    save_uncertainty: bool = True,
    chunk_pixels: int = 65536,
    progress: bool = True,
    label_checkpoint: str | Path | None = None,
    names: dict | None = None,
) -> dict:
    """Generate this rank's share of candidates (resumable) and, when ``world_size == 1``, filter and merge.

    Returns stats: ``n_generated`` (candidates made now), ``n_skipped`` (already complete), ``n_candidates`` (this
    rank's), ``images_per_s``, ``mean_uncertainty`` (this rank's candidates), ``class_histogram`` (pixels per class over
    this rank's candidates, segmentation only), and after a merge also ``n_written`` (kept samples in manifest.jsonl).
    ``label_checkpoint``: the file ``ensemble`` came from, recorded in ``plan.json`` (the weights' fingerprint is
    recorded and checked either way). ``names``: ``classes`` / ``keypoint_names`` + ``skeleton`` of the ensemble's
    outputs (``LabelGeneratorModule.label_names()``), recorded in ``plan.json``; the merged ``manifest.jsonl`` then
    lists each sample's classes by name. ``noise_mode``: the generator's noise inputs -- ``"const"`` (its fixed
    buffers, the same for every sample) or ``"random"`` (drawn per sample from the sample's seed, as the GAN was
    trained: more varied images; :func:`sample_noise`).
    """
    if noise_mode not in ("const", "random"):
        raise ConfigError(f"noise_mode={noise_mode!r} unknown: use random (per-sample noise, as in GAN training) or "
                          "const (the generator's fixed noise)")  # fmt: skip
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if extractor.channels != ensemble.in_channels:
        raise ConfigError(
            f"extractor gives {extractor.channels}-wide hypercolumns, ensemble expects {ensemble.in_channels}: build the "
            "extractor with the layers/generator the ensemble was trained with"
        )
    plan = filter_plan(n, filter_fraction, drop_least_uncertain)
    out = Path(out_dir)
    check_output_dir(out, {"label_checkpoint": label_checkpoint}, marker="plan.json", command="autolabel synthesize")
    task = ensemble.task
    size = int(generator.resolution)
    meta = {**plan, "seed": int(seed), "truncation_psi": float(truncation_psi), "world_size": int(world_size),
            "task": task, "working_resolution": extractor.resolution, "image_resolution": size,
            "label_generator": fingerprint(ensemble), "generator": fingerprint(generator)}  # fmt: skip
    if noise_mode != "const":  # recorded unless const: folders written before the option still resume
        meta["noise_mode"] = noise_mode
    source = file_identity(label_checkpoint) if label_checkpoint is not None else None
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = read_json(plan_path)
        before = old.get("label_checkpoint") or "unknown"
        for key, what in (("label_generator", "label generator"), ("generator", "generator")):
            if key in old and old[key] != meta[key]:
                raise DataError(f"{out} holds candidates of another {what} (plan.json: {key} {old[key][:12]}, label "
                                f"checkpoint {before}; now {meta[key][:12]}): use a new out= or delete {out} "
                                "to start clean")  # fmt: skip
        if {k: v for k, v in old.items() if k not in _RECORDED} != meta:
            shown = {k: v for k, v in old.items() if k not in ("label_generator", "generator", *_RECORDED)}
            raise DataError(
                f"{out} holds a synthesis run with other settings ({shown}): use a new out_dir or the same settings"
            )
    else:
        write_json(plan_path, {**meta, "label_checkpoint": source, **_names(names)})
    mine = list(range(rank, plan["n_total"], world_size))
    todo = [i for i in mine if not (out / "records" / f"{i:08d}.json").exists()]
    was_training = ensemble.training
    ensemble.eval()
    dev = next(ensemble.parameters()).device
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), disable=not progress, desc=f"synthesis rank {rank}")
    for start in range(0, len(todo), batch_size):
        ids = todo[start : start + batch_size]
        z = torch.stack([sample_z(seed, i, generator.z_dim) for i in ids]).to(dev)
        with torch.no_grad():
            w = generator.mapping(z, truncation_psi=truncation_psi)
            ws = w[:, None].repeat(1, generator.num_ws, 1)
            noise = None
            if noise_mode == "random":
                per = [sample_noise(seed, i, generator.noise_shapes) for i in ids]
                noise = [torch.stack([p[k] for p in per]).to(dev) for k in range(len(per[0]))]
            img, feats = extractor.features(ws, noise)
        preds = label_pixels(ensemble, extractor, feats, chunk_pixels)
        for j, i in enumerate(ids):
            sid = f"{i:08d}"
            score = float(image_uncertainty(preds[j]["uncertainty"].float()[None])[0])  # on the ensemble's own grid
            p = _to_image_grid(preds[j], task, extractor.resolution, size)
            unc = p["uncertainty"].float()
            atomic_write_bytes(out / "images" / f"{sid}.png", _png_bytes(_image_uint8(img[j])))
            hist = write_label(out, sid, task, p, extractor.resolution, size, ensemble.out_channels)
            if save_uncertainty:
                atomic_save_npy(out / "uncertainty" / f"{sid}.npy", unc.cpu().numpy().astype(np.float16))
            rec = {"id": sid, "latent_index": i, "seed": sample_seed(seed, i), "uncertainty": score, "rank": rank,
                   "class_histogram": hist}  # fmt: skip
            write_json(out / "records" / f"{sid}.json", rec)
        bar.update(len(ids))
    bar.close()
    if was_training:
        ensemble.train()
    elapsed = time.perf_counter() - t0
    records = [read_json(out / "records" / f"{i:08d}.json") for i in mine]
    atomic_write_text(
        out / f"manifest.rank{rank}.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    )
    histogram: dict[str, int] = {}
    for r in records:
        for c, k in r["class_histogram"].items():
            histogram[c] = histogram.get(c, 0) + k
    stats = {
        "n_generated": len(todo),
        "n_skipped": len(mine) - len(todo),
        "n_candidates": len(mine),
        "images_per_s": len(todo) / elapsed if elapsed > 0 and todo else 0.0,
        "mean_uncertainty": float(np.mean([r["uncertainty"] for r in records])) if records else 0.0,
        "class_histogram": dict(sorted(histogram.items(), key=lambda kv: int(kv[0]))),
    }
    if world_size == 1:
        stats.update(merge_manifests(out))
    return stats


def merge_manifests(out_dir: str | Path, delete_dropped: bool = True) -> dict:
    """Rank 0, after every rank finished: filter all candidates globally and write ``manifest.jsonl`` sorted by id.

    Returns ``n_written``, ``n_dropped`` and ``mean_uncertainty`` of the kept samples.
    """
    out = Path(out_dir)
    plan_path = out / "plan.json"
    if not plan_path.exists():
        raise DataError(f"{plan_path} missing: run synthesize() on every rank with this out_dir before merging")
    plan = read_json(plan_path)
    records: dict[int, dict] = {}
    for r in range(plan["world_size"]):
        path = out / f"manifest.rank{r}.jsonl"
        if not path.exists():
            raise DataError(f"{path} missing: rank {r} has not finished; rerun it (it resumes) and merge again")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                records[int(rec["latent_index"])] = rec
    missing = [i for i in range(plan["n_total"]) if i not in records]
    if missing:
        raise DataError(
            f"{len(missing)} candidates missing (first: {missing[0]}): rerun the unfinished ranks, then merge"
        )
    ordered = [records[i] for i in range(plan["n_total"])]
    keep = set(filter_indices([r["uncertainty"] for r in ordered], plan["n"], plan["drop_least"]).tolist())
    classes = plan.get("classes")

    def record(r: dict) -> dict:
        out = {k: v for k, v in r.items() if k != "class_histogram"}
        if classes and r.get("class_histogram"):
            out["classes"] = [classes[int(c)] if int(c) < len(classes) else str(c) for c in sorted(
                r["class_histogram"], key=int)]  # fmt: skip
        return out

    kept = [record(r) for i, r in enumerate(ordered) if i in keep]
    kept.sort(key=lambda r: r["id"])
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    if delete_dropped:
        ext = LABEL_EXT[plan["task"]]
        for i, r in enumerate(ordered):
            if i not in keep:
                for p in (f"images/{r['id']}.png", f"labels/{r['id']}.{ext}", f"uncertainty/{r['id']}.npy"):
                    (out / p).unlink(missing_ok=True)
    return {
        "n_written": len(kept),
        "n_dropped": len(ordered) - len(kept),
        "mean_uncertainty_kept": float(np.mean([r["uncertainty"] for r in kept])) if kept else 0.0,
    }
