"""Label REAL images with a trained HandsOff label generator (the idea of SemanticGAN, Li et al. CVPR 2021): invert
each image into the GAN's W+ space (the inversion encoder, then optional regularized refinement, as ``fit labels``
inverts its labeled images), compute the generator's hypercolumns of that code and let the ensemble vote per pixel,
with the same per-pixel uncertainty (Jensen-Shannon divergence of the members) and image score that filter synthetic
samples.

The output has the layout of ``autolabel synthesize`` (so ``export``, ``fit segmentation train=`` and the pipeline
read it): ``images/<id>.png`` (the real image as the label generator saw it, at the GAN's resolution),
``labels/<id>.png|.json|.npy``, ``uncertainty/<id>.npy``, ``records/<id>.json``, ``manifest.jsonl`` (every image:
nothing is filtered -- a person reviews instead) and ``plan.json``; plus ``reconstructions/<id>.png`` (the GAN's
rendering of the inverted code: what the label actually describes) and ``review.csv`` (``rank,id,source,uncertainty,
inversion_mse``, the most uncertain first). Ids are the images' paths in the folder without extension, subfolders
joined by ``__``. A rerun into the same folder with the same checkpoint and settings resumes (finished images are
skipped); any other earlier output is refused.

The images must have the GAN's resolution and channels (``resize=True`` resizes them, bilinear, and converts their
colours): a label generator only knows the generator's pixel grid.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autolabel.engine.io import atomic_save_npy, atomic_write_bytes, atomic_write_text, read_json, write_json
from autolabel.errors import CheckpointError, ConfigError, DataError

_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_RECORDED = ("label_checkpoint", "encoder_checkpoint", "classes", "keypoint_names", "skeleton")


def flat_id(image_id: str) -> str:
    """A folder-relative image id (maybe with subfolders) as a flat file stem."""
    return image_id.replace("/", "__").replace("\\", "__")


def check_images(files: list[Path], root: Path, resolution: int, channels: int, resize: bool) -> None:
    """Refuse images whose size or colour channels differ from the GAN's unless ``resize`` (read from headers)."""
    from PIL import Image

    if resize:
        return
    for f in files:
        try:
            with Image.open(f) as im:
                size, mode = im.size, im.mode
        except Exception:  # noqa: BLE001 -- unreadable files get their own one-line error when loaded
            continue
        if size != (resolution, resolution):
            raise DataError(
                f"{f} is {size[0]}x{size[1]} but the label checkpoint's GAN draws {resolution}x{resolution} images: "
                f"pass resize=true to resize {root} (labels are then at {resolution} px), or use a label checkpoint "
                "whose GAN was trained at this resolution"
            )
        grey = mode in _GREY_MODES
        if grey != (channels == 1):
            have, want = ("greyscale", "RGB") if grey else ("colour", "greyscale")
            raise DataError(
                f"{f} is a {have} image but the label checkpoint's GAN draws {want} images: pass resize=true to "
                f"convert {root}, or use a label checkpoint whose GAN matches the images"
            )


def load_label_models(checkpoint: str | Path, *, generator: str | None = None,
                      encoder: str | None = None) -> tuple[Any, nn.Module, Any, dict[str, str]]:  # fmt: skip
    """The label module (``fit labels``' ``last.ckpt``), its generator and the inversion encoder (``encoder`` or the
    one the checkpoint records), on the CPU; plus the paths used. One-line errors when the checkpoint names no
    encoder or the encoder was trained for another GAN."""
    from autolabel.engine.checkpoint_io import load_checkpoint
    from autolabel.gan import load_generator
    from autolabel.handsoff.encoder_module import load_encoder
    from autolabel.handsoff.sharding import load_label_module

    module = load_label_module(checkpoint)
    gen_path = generator or module.hparams.get("generator_path")
    if not gen_path:
        raise CheckpointError(f"{checkpoint} stores no generator path: pass generator=PATH (the GAN it was trained on)")
    enc_path = encoder or module.hparams.get("encoder_path")
    if not enc_path:
        raise CheckpointError(f"the label checkpoint {checkpoint} records no inversion encoder (written before "
                              "`autolabel label` existed): pass encoder=ENC.ckpt, the `fit encoder` checkpoint "
                              "it was trained with")  # fmt: skip
    if not Path(enc_path).is_file():
        raise CheckpointError(f"the inversion encoder {enc_path} (recorded in {checkpoint}) is gone: pass "
                              "encoder=ENC.ckpt")  # fmt: skip
    gen = load_generator(gen_path).eval()
    hp = load_checkpoint(enc_path, what="encoder checkpoint").get("hyper_parameters", {})
    gk = hp.get("generator_kwargs") or {}
    want = {"resolution": gen.resolution, "w_dim": gen.w_dim, "img_channels": gen.img_channels}
    have = {k: gk[k] for k in want if k in gk}
    if any(int(v) != int(want[k]) for k, v in have.items()):
        raise CheckpointError(f"the encoder {enc_path} inverts into a GAN with {have}, but the label checkpoint's "
                              f"GAN {gen_path} has {want}: pass the encoder trained on that GAN")  # fmt: skip
    enc = load_encoder(enc_path, generator=gen)
    return module, gen, enc, {"generator": str(gen_path), "encoder": str(enc_path)}


def label_images(module: Any, generator: nn.Module, encoder: nn.Module, images: str | Path, out: str | Path, *,
                 refine_steps: int = 0, refine_lr: float = 0.1, lpips: nn.Module | None = None,
                 batch_size: int = 8, resize: bool = False, chunk_pixels: int = 65536, progress: bool = True,
                 label_checkpoint: str | Path | None = None, encoder_checkpoint: str | Path | None = None,
                 ) -> dict[str, Any]:  # fmt: skip
    """Label every image of ``images`` into ``out`` (module docstring). ``module``: a trained
    :class:`~autolabel.handsoff.label_generator_module.LabelGeneratorModule`; ``generator`` its GAN and ``encoder`` the
    inversion encoder (an ``EncoderModule`` or its ``InversionEncoder``), all on one device. Returns stats:
    ``n_images``, ``n_labeled`` (now), ``n_skipped`` (earlier run), ``mean_uncertainty``, ``mean_inversion_mse``,
    ``images_per_s`` and the paths of ``review.csv`` and the review figures."""
    from autolabel.data.images import ImageFolderDataset, load_image, to_tensor
    from autolabel.engine.paths import check_output_dir
    from autolabel.handsoff.invert import invert_images
    from autolabel.handsoff.label_generator import image_uncertainty
    from autolabel.handsoff.synthesis import (
        _image_uint8,
        _names,
        _png_bytes,
        _to_image_grid,
        file_identity,
        fingerprint,
        label_pixels,
        write_label,
    )

    if batch_size < 1 or refine_steps < 0:
        raise ConfigError(f"batch_size={batch_size} must be >= 1 and refine_steps={refine_steps} >= 0")
    root, out = Path(images), Path(out)
    inputs = {"images": images, "checkpoint": label_checkpoint, "encoder": encoder_checkpoint}
    check_output_dir(out, inputs, marker="plan.json", command="autolabel label")
    try:
        ds = ImageFolderDataset(root, int(generator.resolution), int(generator.img_channels), with_labels=False)
    except DataError as e:
        raise DataError(f"images={images}: nothing to label ({e})") from None
    size, channels = int(generator.resolution), int(generator.img_channels)
    check_images(ds.files, root, size, channels, resize)
    ensemble = module.ensemble
    extractor = module.make_extractor(generator)
    inv_encoder = getattr(encoder, "encoder", encoder)
    task = ensemble.task
    sids = [flat_id(i) for i in ds.ids]
    if len(set(sids)) != len(sids):
        raise DataError(f"{root}: two images map to one id (e.g. a__b.png beside a/b.png): rename one")
    names = module.label_names()
    meta = {"source": "real", "images": str(root.resolve()), "task": task, "image_resolution": size,
            "working_resolution": extractor.resolution, "refine_steps": int(refine_steps), "resize": bool(resize),
            "label_generator": fingerprint(ensemble), "generator": fingerprint(generator),
            "encoder": fingerprint(inv_encoder)}  # fmt: skip
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = read_json(plan_path)
        if {k: v for k, v in old.items() if k not in _RECORDED} != meta:
            raise DataError(f"{out} holds labels made with another checkpoint, encoder or settings (plan.json): use "
                            f"a new out= or delete {out} to start clean")  # fmt: skip
    else:
        ids = {k: file_identity(v) for k, v in (("label_checkpoint", label_checkpoint),
               ("encoder_checkpoint", encoder_checkpoint)) if v is not None}  # fmt: skip
        write_json(plan_path, {**meta, **ids, **_names(names)})
    todo = [j for j, s in enumerate(sids) if not (out / "records" / f"{s}.json").exists()]
    was_training = ensemble.training
    ensemble.eval()
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), disable=not progress, desc="label real images")
    for start in range(0, len(todo), batch_size):
        part = todo[start : start + batch_size]
        arrs = [load_image(ds.files[j], size, channels) for j in part]  # resize: checked above unless resize=true
        x = torch.stack([to_tensor(a) for a in arrs])
        inv = invert_images(inv_encoder, generator, x, refine_steps=refine_steps, lr=refine_lr, lpips=lpips,
                            progress=False)  # fmt: skip
        with torch.no_grad():
            _, feats = extractor.features(inv["ws"].to(next(generator.parameters()).dtype))
        preds = label_pixels(ensemble, extractor, feats, chunk_pixels)
        for b, j in enumerate(part):
            sid = sids[j]
            score = float(image_uncertainty(preds[b]["uncertainty"].float()[None])[0])
            p = _to_image_grid(preds[b], task, extractor.resolution, size)
            img = arrs[b][..., 0] if channels == 1 else arrs[b]
            atomic_write_bytes(out / "images" / f"{sid}.png", _png_bytes(img))
            atomic_write_bytes(out / "reconstructions" / f"{sid}.png", _png_bytes(_image_uint8(inv["recon"][b])))
            hist = write_label(out, sid, task, p, extractor.resolution, size, ensemble.out_channels)
            atomic_save_npy(
                out / "uncertainty" / f"{sid}.npy", p["uncertainty"].float().cpu().numpy().astype(np.float16)
            )
            rec = {"id": sid, "source": str(ds.files[j]), "uncertainty": score,
                   "inversion_mse": float(inv["mse"][b]), "class_histogram": hist}  # fmt: skip
            if inv.get("lpips") is not None:
                rec["inversion_lpips"] = float(inv["lpips"][b])
            write_json(out / "records" / f"{sid}.json", rec)
        bar.update(len(part))
    bar.close()
    if was_training:
        ensemble.train()
    elapsed = time.perf_counter() - t0
    records = [read_json(out / "records" / f"{s}.json") for s in sids]
    classes = names.get("classes")

    def manifest_row(r: dict) -> dict:
        row = {k: v for k, v in r.items() if k != "class_histogram"}
        if classes and r.get("class_histogram"):
            row["classes"] = [
                classes[int(c)] if int(c) < len(classes) else c for c in sorted(r["class_histogram"], key=int)
            ]
        return row

    rows = sorted((manifest_row(r) for r in records), key=lambda r: r["id"])
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    review = write_review(out, records)
    scores = [r["uncertainty"] for r in records]
    return {
        "n_images": len(sids),
        "n_labeled": len(todo),
        "n_skipped": len(sids) - len(todo),
        "mean_uncertainty": float(np.mean(scores)),
        "max_uncertainty": float(np.max(scores)),
        "mean_inversion_mse": float(np.mean([r["inversion_mse"] for r in records])),
        "images_per_s": len(todo) / elapsed if todo and elapsed > 0 else 0.0,
        **review,
    }


def write_review(out: Path, records: list[dict], n_show: int = 8) -> dict[str, Any]:
    """``review.csv`` (most uncertain first) and two pictures, ``most_uncertain.png`` / ``least_uncertain.png``: one
    row per image -- the image, the GAN's reconstruction, the label drawn on the image, the uncertainty map."""
    from PIL import Image

    from autolabel.viz import colorize_depth, draw_keypoints, heatmap, image_grid, overlay_mask

    plan = read_json(out / "plan.json")
    task = plan["task"]
    ranked = sorted(records, key=lambda r: (-r["uncertainty"], r["id"]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "id", "source", "uncertainty", "inversion_mse"])
    for i, r in enumerate(ranked, start=1):
        w.writerow([i, r["id"], r["source"], f"{r['uncertainty']:.6g}", f"{r['inversion_mse']:.6g}"])
    atomic_write_text(out / "review.csv", buf.getvalue())

    def row(r: dict) -> list[np.ndarray]:
        sid = r["id"]
        img = np.asarray(Image.open(out / "images" / f"{sid}.png").convert("RGB"))
        rec = np.asarray(Image.open(out / "reconstructions" / f"{sid}.png").convert("RGB"))
        if task == "segmentation":
            lab = overlay_mask(img, np.asarray(Image.open(out / "labels" / f"{sid}.png")), alpha=0.5)
        elif task == "keypoints":
            kp = read_json(out / "labels" / f"{sid}.json")["keypoints"]
            lab = draw_keypoints(img, np.array([[k["x"], k["y"]] for k in kp]), radius=max(1, img.shape[0] // 32))
        else:
            lab = colorize_depth(np.load(out / "labels" / f"{sid}.npy"))
        unc = heatmap(np.load(out / "uncertainty" / f"{sid}.npy").astype(np.float32), vmax=None)
        return [img, rec, lab, unc]

    figs = {}
    for name, picks in (("most_uncertain", ranked[:n_show]), ("least_uncertain", ranked[::-1][:n_show])):
        tiles = [t for r in picks for t in row(r)]
        figs[name] = image_grid(tiles, out / f"{name}.png", ncol=4, size=64)
    return {"review": out / "review.csv", "figures": [figs["most_uncertain"], figs["least_uncertain"]],
            "most_uncertain": [r["id"] for r in ranked[:n_show]],
            "least_uncertain": [r["id"] for r in ranked[::-1][:n_show]]}  # fmt: skip


def label_folder(checkpoint: str | Path, images: str | Path, out: str | Path, *, generator: str | None = None,
                 encoder: str | None = None, refine_steps: int = 0, refine_lr: float = 0.1, lpips_net: str = "vgg",
                 lpips_weights: str | None = None, lpips_random: bool = False, batch_size: int = 8,
                 resize: bool = False, device: str = "cpu", progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """``autolabel label``: load the label checkpoint, its GAN and encoder, then :func:`label_images` on ``device``.
    Refinement (``refine_steps > 0``) uses LPIPS like ``fit labels`` (offline weights; ``lpips_random`` for tests)."""
    from autolabel.engine.paths import check_output_dir

    check_output_dir(out, {"images": images, "checkpoint": checkpoint, "encoder": encoder, "generator": generator},
                     marker="plan.json", command="autolabel label")  # fmt: skip
    module, gen, enc, paths = load_label_models(checkpoint, generator=generator, encoder=encoder)
    dev = torch.device(device)
    module.ensemble.to(dev)
    lp = None
    if refine_steps > 0:
        from autolabel.handsoff.lpips_weights import build_lpips

        lp = build_lpips(lpips_net, lpips_weights, random_backbone=lpips_random).to(dev)
    stats = label_images(module, gen.to(dev), enc.encoder.to(dev), images, out, refine_steps=refine_steps,
                         refine_lr=refine_lr, lpips=lp, batch_size=batch_size, resize=resize, progress=progress,
                         label_checkpoint=checkpoint, encoder_checkpoint=paths["encoder"])  # fmt: skip
    return {**stats, **paths}
