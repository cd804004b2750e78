"""Hi-LANDER on real data with classes unseen in training: Fashion-MNIST (Debian's dataset-fashion-mnist).

Encoder trained on classes 0-4 (train split), Hi-LANDER meta-trained on held-out class 0-4 images, the pool is classes
5-9 of the test split (5,000 images). Compares Hi-LANDER (ours: similarity-aware link head; and the reference head)
with k-means (true k), agglomerative (true k) and DBSCAN. Run by hand:

    .venv/bin/python benchmarks/hilander_fashion_mnist.py [--per-class 2000] [--root runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from pipelines.cli import main as cli


def run(root: Path, per_class: int, extra: list[str], name: str) -> dict:
    args = [
        "run", "pipeline=hilander", "data.source=fashion_mnist", f"data.per_class={per_class}",
        "classifier.model.image_size=28", "classifier.model.channels=1", "classifier.max_epochs=8",
        "hilander.baselines=[kmeans,agglomerative,dbscan]", "trainer.enable_progress_bar=false", "progress=false",
        f"run.root={root}", f"run.name={name}", *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    assert cli(args) == 0
    wall = time.perf_counter() - t0
    run_dir = max((root / name).iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((run_dir / "summary.json").read_text())
    cluster = json.loads((run_dir / "cluster" / "manifest.json").read_text())
    return {"summary": summary, "cluster_seconds": cluster["metrics"].get("seconds"), "wall": wall, "dir": str(run_dir)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--root", default="runs/bench")
    a = ap.parse_args()
    root = Path(a.root)
    ours = run(root, a.per_class, [], "fmnist")
    ref = run(root, a.per_class, ["hilander.model.link_similarity=false"], "fmnist_refhead")
    rows = [("Hi-LANDER (similarity-aware link head)", ours["summary"], ours["cluster_seconds"]),
            ("Hi-LANDER (reference link head)", ref["summary"], ref["cluster_seconds"])]  # fmt: skip
    for name, m in ours["summary"].get("baselines", {}).items():
        rows.append((name, m, m.get("seconds")))
    print(f"\nFashion-MNIST, pool = classes 5-9 (test split); {platform.machine()}, {os.cpu_count()} cores; "
          f"pipeline wall time {ours['wall']:.0f}s; run {ours['dir']}")  # fmt: skip
    print("| method | pairwise F | BCubed F | NMI | clusters | seconds |")
    print("|---|---|---|---|---|---|")
    for name, m, sec in rows:
        print(f"| {name} | {m['pairwise_f']:.3f} | {m['bcubed_f']:.3f} | {m['nmi']:.3f} | {m['n_clusters']} | "
              f"{sec if sec is None else round(sec, 2)} |")  # fmt: skip


if __name__ == "__main__":
    main()
