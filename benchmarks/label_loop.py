"""Selected vs random labels on the bundled procedural data, and the direct labels of ``autolabel label``.

1. ``autolabel run pipeline=label_loop select.oracle=true`` at the default (CPU demo) settings: 480 pool images at
   16 px, 16 labels picked by ``select`` (pixels + k-means), ground-truth masks copied in (the oracle), GAN ->
   encoder -> label generator -> 300 synthetic images -> label the real pool and the test images -> downstream check.
2. The same stages for ``--draws`` random sets of 16 pool images (seeds 0, 1, ...), reusing that run's GAN and encoder
   (the pipeline's own stage functions, same config): label generator, synthesis, direct labels, downstream check.
3. Real-only (cheap): the downstream net on the 16 real labels only, for ``--kmeans-seeds`` selections (k-means seeds)
   and ``--real-draws`` random draws.

Every downstream net trains for the same optimizer steps and is scored on the same 80% of the 120 test images.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/label_loop.py --root /tmp/label_loop_bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _labeled_folder(pool: Path, stems: list[str], dst: Path) -> Path:
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for s in stems:
        shutil.copyfile(pool / "images" / f"{s}.png", dst / "images" / f"{s}.png")
        shutil.copyfile(pool / "masks" / f"{s}.png", dst / "masks" / f"{s}.png")
    shutil.copyfile(pool / "labels.json", dst / "labels.json")
    return dst


def _real_only(cfg, labeled: Path, test: Path, out: Path) -> float:
    import dataclasses

    from autolabel.data.layout import open_labeled
    from autolabel.tasks.compare import compare_training_sets

    d = dataclasses.replace(cfg.downstream, sets=["real_few"])
    size = cfg.shapes.size
    res = compare_training_sets("segmentation", open_labeled(labeled, "segmentation", size), None,
                                open_labeled(test, "segmentation", size), d, cfg.trainer, out)  # fmt: skip
    return float(res["metrics"]["real_few"]["miou"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="/tmp/label_loop_bench")
    ap.add_argument("--draws", type=int, default=3, help="random label sets run through the whole HandsOff chain")
    ap.add_argument("--real-draws", type=int, default=10, help="random label sets for the real-only rows")
    ap.add_argument("--kmeans-seeds", type=int, default=3, help="selections (k-means seeds) for the real-only rows")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/label_loop.json"))
    a = ap.parse_args()

    import numpy as np

    from autolabel.config import load_config, to_object
    from autolabel.engine.io import read_json
    from autolabel.engine.trainer import seed_all
    from autolabel.selection import select_images
    from pipelines.cli import main as cli
    from pipelines.definitions import PipelineConfig
    from pipelines.runner import StageContext
    from pipelines.stages import downstream, label_real, labels, synthesis

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    root = Path(a.root)
    shutil.rmtree(root, ignore_errors=True)
    common = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "progress=false"]
    t0 = time.perf_counter()
    rc = cli(["run", "pipeline=label_loop", "select.oracle=true", *common, f"run.root={root / 'runs'}"])
    assert rc == 0, rc
    pipeline_s = time.perf_counter() - t0
    (run,) = [p for p in (root / "runs" / "label_loop").iterdir() if p.is_dir()]
    summary = read_json(run / "summary.json")
    results: dict = {"selected": {k: summary[k] for k in summary if k.startswith("miou_")}}
    results["selected"]["pipeline_seconds"] = round(pipeline_s, 1)
    results["stage_seconds"] = {k: v["seconds"] for k, v in summary["stages"].items()}
    cfg = to_object(load_config(PipelineConfig, overrides=["pipeline=label_loop", *common]))
    pool_out = read_json(run / "pool" / "manifest.json")["outputs"]
    pool, test = Path(pool_out["images"]).parent, Path(pool_out["test"])
    manifests = {s: read_json(run / s / "manifest.json") for s in ("gan", "encoder")}
    stems = sorted(p.stem for p in (pool / "images").glob("*.png"))

    # 2. random labels through the same stages, on the same GAN and encoder
    results["random"] = []
    for seed in range(a.draws):
        t1 = time.perf_counter()
        pick = sorted(np.random.default_rng(seed).choice(stems, 16, replace=False).tolist())
        base = root / f"random{seed}"
        data = {"outputs": {"labeled": str(_labeled_folder(pool, pick, base / "labeled")),
                            "images": str(pool / "images"), "test": str(test)}}  # fmt: skip
        inputs = {"data": data, **manifests}
        for stage in (labels, synthesis, label_real, downstream):
            sdir = base / stage.STAGE.name
            sdir.mkdir(parents=True, exist_ok=True)
            seed_all(cfg.trainer.seed)  # as the runner does before every stage
            out = stage.STAGE.fn(StageContext(cfg, None, sdir, {n: inputs[n] for n in stage.STAGE.needs}))
            inputs[stage.STAGE.name] = {"outputs": {k: str(v) for k, v in out.get("outputs", {}).items()},
                                        "metrics": out.get("metrics", {})}  # fmt: skip
        row = {k: v for k, v in inputs["downstream"]["metrics"].items() if k.startswith("miou_")}
        row["miou_direct"] = inputs["label_real"]["metrics"]["miou_direct"]
        row.update(seed=seed, seconds=round(time.perf_counter() - t1, 1))
        results["random"].append(row)
        print("random", row, flush=True)

    # 3. real-only, cheap: more selections and more random draws
    real_sel, real_rand = [], []
    for seed in range(a.kmeans_seeds):
        sel_dir = root / f"select{seed}"
        select_images(pool / "images", 16, sel_dir, seed=seed)
        picked = sorted(p.stem for p in (sel_dir / "images").glob("*.png"))
        real_sel.append(_real_only(cfg, _labeled_folder(pool, picked, sel_dir / "labeled"), test, sel_dir / "ds"))
    for seed in range(a.real_draws):
        pick = sorted(np.random.default_rng(seed).choice(stems, 16, replace=False).tolist())
        d = root / f"real_random{seed}"
        real_rand.append(_real_only(cfg, _labeled_folder(pool, pick, d / "labeled"), test, d / "ds"))
    results["real_only"] = {"selected_kmeans_seeds": real_sel, "random_draws": real_rand}

    def stat(xs):
        return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0,
                "min": float(np.min(xs)), "max": float(np.max(xs)), "n": len(xs)}  # fmt: skip

    keys = ("miou_real_few", "miou_synthetic", "miou_mixed", "miou_direct", "miou_constant")
    results["summary"] = {
        "random": {k: stat([r[k] for r in results["random"]]) for k in keys if all(k in r for r in results["random"])},
        "real_only_selected": stat(real_sel),
        "real_only_random": stat(real_rand),
    }
    results["meta"] = {"date": dt.date.today().isoformat(), "commit": git.strip(), "machine": platform.machine(),
                       "cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                       "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2), json.dumps(results["selected"], indent=2))


if __name__ == "__main__":
    main()
