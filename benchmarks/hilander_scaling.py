"""Hi-LANDER cost growth: kNN + hierarchical inference time and peak memory on random unit 256-d features.

Run by hand (each N in its own process so peak RSS is per size):

    .venv/bin/python benchmarks/hilander_scaling.py --sizes 10000 100000 1000000

Random directions are the worst case for approximate kNN (no cluster structure), so the IVF recall printed here is a
lower bound; the clustering output is meaningless and not scored -- this measures cost only.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def one(n: int, dim: int, k: int, levels: int, hidden: int) -> dict:
    import numpy as np
    import torch

    from autolabel.data.synthetic import random_unit_features
    from autolabel.hilander.gnn import LANDER
    from autolabel.hilander.hierarchy import cluster_pool
    from autolabel.hilander.search import knn_recall

    torch.manual_seed(0)
    x = random_unit_features(n, dim, seed=0)
    model = LANDER(dim, hidden=hidden)
    t0 = time.perf_counter()
    res = cluster_pool(model, x, k=k, tau=0.5, levels=levels, early_stop=False, progress=False)
    total = time.perf_counter() - t0
    out = {
        "n": n, "dim": dim, "k": k, "hidden": hidden, "levels_run": len(res.levels), "seconds_total": round(total, 2),
        **{f"seconds_{key}": round(v, 2) for key, v in res.seconds.items()},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "knn_method": "flat" if n <= 100_000 else "ivf",
    }  # fmt: skip
    if n > 100_000:  # recall of the level-0 IVF search on a sample of queries, against exact search
        import faiss

        from autolabel.hilander.search import build_index

        idx = np.random.default_rng(0).choice(n, 2000, replace=False)
        ivf = build_index(x, "ivf")  # the index knn_search builds for this N (same defaults, same seed)
        ivf.add(x)
        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(x)
        # a query's results do not depend on the other queries, so these rows equal the full search's rows
        approx, exact = ivf.search(x[idx], k + 1)[1], flat.search(x[idx], k + 1)[1]
        drop_self = [(a[a != i][:k], e[e != i][:k]) for a, e, i in zip(approx, exact, idx)]
        out["ivf_recall_at_k"] = round(knn_recall(np.stack([a for a, _ in drop_self]),
                                                  np.stack([e for _, e in drop_self])), 3)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.dim, a.k, a.levels, a.hidden)))
        return
    rows = []
    for n in a.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(a.dim), "--k", str(a.k), "--levels",
               str(a.levels), "--hidden", str(a.hidden)]  # fmt: skip
        line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(line))
        print(rows[-1], flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores")
    keys = list(rows[0])
    for r in rows:
        keys += [k for k in r if k not in keys]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
