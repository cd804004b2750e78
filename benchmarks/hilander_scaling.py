"""Hi-LANDER at scale on structured data: the whole ``autolabel cluster`` command against one exact faiss search.

A seeded mixture on the unit sphere (:func:`autolabel.data.synthetic.make_identity_mixture`: 128-d, heavy-tailed
class sizes around ``--mean-size``, per-class noise, look-alike families, outliers) gives a meta-training pool
(``--train-classes`` classes) and, with other seeds, pools of N = ``--sizes`` points. Then:

1. ``autolabel fit hilander train_features=seen.npz`` with its defaults (timed: meta-training);
2. per N, each in its own process (wall seconds and peak RSS of that process alone):
   - ``autolabel cluster checkpoint=... features=pool.npz`` with every default (approximate kNN above
     ``cluster.knn.exact_max`` points, its recall@k measured against exact search on sampled queries);
   - the same with ``cluster.knn.method=flat`` (exact kNN) up to ``--exact-cluster-max`` points: the F-score to match;
   - one exact faiss search of the pool (``IndexFlatIP``, every row's k+1 nearest, all threads): the yardstick.
     Above ``--exact-full-max`` points it is timed on ``--exact-sample`` query rows against the whole pool and scaled
     by N / rows (exact search time is linear in the number of queries), and the row says so.

The figure is the ratio cluster-command seconds / exact-search seconds, measured in the same run on the same machine.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/hilander_scaling.py --sizes 80000 300000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mixture(n_points: int, mean_size: float, seed: int):
    from autolabel.data.synthetic import make_identity_mixture

    return make_identity_mixture(max(1, round(n_points / mean_size)), dim=128, mean_size=mean_size, seed=seed)


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` in a child of a fresh process so that RUSAGE_CHILDREN's peak is this command's alone."""
    probe = [sys.executable, __file__, "--measure", str(log), "--", *cmd]
    out = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def _measure_child(log: Path, cmd: list[str]) -> None:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed (rc {rc}); see {log}")
    print(json.dumps({"seconds": round(wall, 2), "peak_rss_gb": round(peak, 3)}))


def _exact_child(path: str, k: int, sample: int) -> None:
    import faiss
    import numpy as np

    x = np.ascontiguousarray(np.load(path)["features"], dtype=np.float32)
    n = len(x)
    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    rows = n if sample <= 0 or sample >= n else sample
    q = x if rows == n else x[np.random.default_rng(0).choice(n, rows, replace=False)]
    index.search(q, k + 1)
    wall = time.perf_counter() - t0
    print(
        json.dumps({"seconds": round(wall * n / rows, 2), "rows_timed": rows, "threads": faiss.omp_get_max_threads()})
    )


def autolabel(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("autolabel")), *args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[80_000, 300_000, 1_000_000])
    ap.add_argument("--mean-size", type=float, default=40.0, help="mean points per class (log-normal sizes)")
    ap.add_argument("--train-classes", type=int, default=200, help="meta-training classes (the issue: ~7k points)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--exact-full-max", type=int, default=300_000, help="above: exact search timed on a sample")
    ap.add_argument("--exact-sample", type=int, default=50_000)
    ap.add_argument("--exact-cluster-max", type=int, default=300_000, help="above: no exact-kNN clustering run")
    ap.add_argument("--checkpoint", default="", help="reuse a fit hilander checkpoint (skips meta-training)")
    ap.add_argument("--fit-override", nargs="*", default=[], help="extra key=value for fit hilander (smoke runs)")
    ap.add_argument("--work", default="/tmp/hilander_scaling")
    ap.add_argument("--out", default="benchmarks/results/hilander_scaling.json")
    ap.add_argument("--measure", default="", help=argparse.SUPPRESS)
    ap.add_argument("--exact", default="", help=argparse.SUPPRESS)
    ap.add_argument("--sample", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        return _measure_child(Path(a.measure), a.cmd)
    if a.exact:
        return _exact_child(a.exact, a.k, a.sample)

    import numpy as np

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    env_threads = os.environ.get("OMP_NUM_THREADS", "all")
    res: dict = {"benchmark": "hilander_scaling", "date": time.strftime("%Y-%m-%d"),
                 "command": " ".join([Path(sys.executable).name, *sys.argv]),
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={env_threads}",
                 "mixture": {"dim": 128, "mean_size": a.mean_size, "generator": "make_identity_mixture"},
                 "rows": []}  # fmt: skip
    ckpt = a.checkpoint
    if not ckpt:
        xs, ys = mixture(a.train_classes * a.mean_size, a.mean_size, seed=1000)
        np.savez(work / "seen.npz", features=xs, labels=ys)
        print(f"meta-training: {len(xs)} points, {a.train_classes} classes", flush=True)
        fit = measure(autolabel("fit", "hilander", f"train_features={work / 'seen.npz'}", f"run.root={work / 'runs'}",
                                "trainer.enable_progress_bar=false", *a.fit_override), work / "fit.log")  # fmt: skip
        runs = sorted((work / "runs" / "hilander").glob("*/hilander/checkpoints/last.ckpt"), key=os.path.getmtime)
        ckpt = str(runs[-1])
        res["fit"] = {"points": len(xs), "classes": a.train_classes, **fit}
        print(f"fit hilander: {fit}", flush=True)
    res["checkpoint"] = ckpt
    for i, n in enumerate(a.sizes):
        x, y = mixture(n, a.mean_size, seed=i)
        pool = work / f"pool_{n}.npz"
        np.savez(pool, features=x, labels=y)
        row: dict = {"n": len(x), "classes": int(y.max() + 1)}
        del x, y
        runs = {"default": []}
        if n <= a.exact_cluster_max:
            runs["exact_knn"] = ["cluster.knn.method=flat"]
        for name, extra in runs.items():
            out = work / f"clusters_{n}_{name}.csv"
            m = measure(autolabel("cluster", f"checkpoint={ckpt}", f"features={pool}", f"out={out}", *extra),
                        work / f"cluster_{n}_{name}.log")  # fmt: skip
            rep = json.loads(out.with_suffix(".metrics.json").read_text())
            knn0 = rep["levels"][0].get("knn", {}) if rep["levels"] else {}
            row[name] = {**m, "pairwise_f": round(rep["hilander"]["pairwise_f"], 4),
                         "bcubed_f": round(rep["hilander"]["bcubed_f"], 4), "nmi": round(rep["hilander"]["nmi"], 4),
                         "clusters": rep["hilander"]["n_clusters"], "tau": rep["tau"],
                         "stage_seconds": {key: round(v, 2) for key, v in rep["seconds"].items()},
                         "level0_knn": knn0, "levels": [(lv["nodes"], lv["clusters"]) for lv in rep["levels"]]}  # fmt: skip
            print(f"N={n} {name}: {row[name]}", flush=True)
        sample = 0 if n <= a.exact_full_max else a.exact_sample
        cmd = [sys.executable, __file__, "--exact", str(pool), "--k", str(a.k), "--sample", str(sample)]
        row["exact_search"] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        row["ratio_cluster_to_exact_search"] = round(row["default"]["seconds"] / row["exact_search"]["seconds"], 3)
        if "exact_knn" in row:
            row["pairwise_f_gap_to_exact_knn"] = round(row["exact_knn"]["pairwise_f"] - row["default"]["pairwise_f"], 4)
        print(f"N={n}: exact search {row['exact_search']}, ratio {row['ratio_cluster_to_exact_search']}", flush=True)
        res["rows"].append(row)
        pool.unlink()
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "platform"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    main()
