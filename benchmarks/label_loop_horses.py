"""The label loop on the Weizmann horses: 16 *selected* vs 16 *random* labels, and ``autolabel label``'s direct labels.

Runs on the work folder of a finished ``benchmarks/handsoff_horses.py`` run (its derived data and its trained GAN,
encoder and label generator), so the numbers sit beside that run's synthetic / real_few / mixed table:

1. ``select`` (pixels + k-means, k = 16, the command's defaults) over the photos of horses 1-200; the oracle takes the
   16 picks' ground-truth masks from the 200 labeled horses.
2. ``--draws`` random sets of 16 of horses 1-200 (seeds 1, 2, ...).
3. Real-only downstream for each set: the benchmark's UNet, ``--seg-steps`` optimizer steps, validated on the same 26
   test horses and scored on the other 102 (``autolabel.tasks.compare``).
4. Direct labels: ``autolabel label`` with the run's label generator on the 128 test horses (inverted by its encoder),
   scored on the same 102 horses against their masks.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/label_loop_horses.py --work /tmp/hb_s0 --size 32 \\
        --out benchmarks/results/label_loop_horses_seed0.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_TRAIN = 200


def _subset(real200: Path, stems: list[str], dst: Path) -> Path:
    """A labeled folder (images/ + masks/) of the horses ``stems`` taken from the 200 labeled horses."""
    if dst.exists():
        shutil.rmtree(dst)
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
        for s in stems:
            shutil.copyfile(real200 / sub / f"{s}.png", dst / sub / f"{s}.png")
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="a finished handsoff_horses.py --work folder")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seg-steps", type=int, default=500)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import torch

    from autolabel.config import TrainerConfig
    from autolabel.config.downstream import DownstreamConfig
    from autolabel.data.labeled import LabeledFolder
    from autolabel.handsoff.label_real import label_folder
    from autolabel.selection import select_images
    from autolabel.tasks.compare import compare_training_sets
    from pipelines.stages.label_real import score_direct_labels

    torch.set_num_threads(1)
    work = Path(a.work)
    data = work / "data"
    real200, test, photos = data / "labeled_1_200", data / "test_201_328", data / "photos_1_200"
    out_dir = work / "label_loop"
    out_dir.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    cfg = DownstreamConfig(steps=a.seg_steps, val_every=50, batch_size=8, base=16, depth=3, sets=["real_few"])
    tc = TrainerConfig(accelerator="cpu", seed=a.seed, enable_progress_bar=False)
    test_folder = LabeledFolder(test, task="segmentation", size=a.size, n_classes=2)

    def real_only(stems: list[str], name: str) -> dict:
        folder = _subset(real200, stems, out_dir / f"labels_{name}")
        real = LabeledFolder(folder, task="segmentation", size=a.size, n_classes=2)
        got = compare_training_sets("segmentation", real, None, test_folder, cfg, tc, out_dir / f"net_{name}")
        m = got["metrics"]["real_few"]
        print(f"  {name:10s} real-only mIoU {m['miou']:.3f}", flush=True)
        return {"horses": stems, "miou": m["miou"], "iou_horse": m["iou_class1"], "best_step": m.get("best_step")}

    res: dict = {"benchmark": "label_loop_horses", "date": dt.date.today().isoformat(),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "settings": vars(a),
                 "handsoff_run": str(work)}  # fmt: skip
    # 1. select
    sel_dir = out_dir / "select"
    if sel_dir.exists():
        shutil.rmtree(sel_dir)
    sel = select_images(photos, a.n, sel_dir, seed=a.seed)
    stems = sorted(p.stem for p in (sel_dir / "images").glob("*.png"))
    res["select"] = {**real_only(stems, "selected"), "metrics": sel["metrics"]}
    # 2-3. random draws
    all_stems = sorted(p.stem for p in photos.glob("*.png"))
    draws = []
    for d in range(1, a.draws + 1):
        pick = sorted(np.random.default_rng(d).choice(all_stems, a.n, replace=False).tolist())
        draws.append(real_only(pick, f"random{d}"))
    vals = [r["miou"] for r in draws]
    res["random"] = {"draws": draws, "mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1
                     else 0.0}  # fmt: skip
    # 4. direct labels of the test horses
    direct_dir = out_dir / "direct_test"
    if direct_dir.exists():
        shutil.rmtree(direct_dir)
    label_ckpt = work / "runs" / "labels" / "labels" / "checkpoints" / "last.ckpt"
    encoder = work / "runs" / "encoder" / "encoder" / "checkpoints" / "last.ckpt"
    t1 = time.perf_counter()
    label_folder(label_ckpt, test / "images", direct_dir, encoder=str(encoder), progress=False)
    direct = score_direct_labels(direct_dir, test, "segmentation", cfg.val_fraction)
    res["direct"] = {**direct, "seconds": round(time.perf_counter() - t1, 1)}
    print(f"  direct labels of the test horses: mIoU {direct['miou']:.3f}", flush=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
