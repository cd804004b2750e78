"""Which images of an unlabeled pool to label: embed the pool, cluster it, pick one representative per largest cluster.

``select_images`` is what ``autolabel select`` and the ``label_loop`` pipeline's ``select`` stage run:

1. **Embed** every image of the pool (:func:`embed_pool`): ``pixels`` (default; always works offline) -- each image
   resized to ``image_size`` x ``image_size`` (PIL bilinear), flattened, centred by the pool's mean image and
   L2-normalized; ``torchscript:FILE`` / ``timm:NAME`` + ``weights=FILE`` (a frozen backbone whose weights are on disk,
   :mod:`autolabel.data.embedders`); or a ``fit classifier`` checkpoint (the platform's feature encoder).
2. **Cluster** it: with a Hi-LANDER checkpoint (``lander=``), :func:`autolabel.hilander.clustering.cluster_features`
   at the checkpoint's calibrated tau; without one, spherical k-means (faiss) with ``k = n``.
3. **Pick** ``n`` images (:func:`pick_representatives`): clusters are ranked by size (largest first); each of the
   ``n`` largest gets one pick -- its density peak (Hi-LANDER: the member with the highest predicted density) or the
   member nearest its centroid (k-means). With fewer clusters than ``n`` the remaining picks go to the largest
   clusters, in proportion to their size (D'Hondt: the next pick goes to the cluster with the most members per pick
   so far), and are spread inside a cluster by k-means on its members: the member nearest each sub-centroid.

Outputs (:func:`write_selection`): ``selected.csv`` (``rank,id,source,cluster,cluster_size,represents,score``; score:
cosine similarity of the pick to the mean of the members it stands for, 1 = typical), the pool's features
``pool.npz``, copies of the picks in ``images/`` (flat names: a subfolder path ``a/b.png`` becomes ``a__b.png``), an
empty ``masks/`` and ``LABEL_ME.txt`` saying what goes there, and ``contact_sheet.png`` (the picks with their rank).
Once ``masks/`` holds a mask per image the folder is a labeled folder: ``data.labeled=OUT`` / ``labeled=OUT``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autolabel.errors import ConfigError, DataError

EMBEDDER_HELP = "pixels (default) | torchscript:FILE | timm:NAME (+ weights=FILE)"
LABEL_ME = """Label the images in images/: put one mask per image into masks/ (beside this file):

  masks/<same name as the image>.png   one class index per pixel (0 = background, 1, 2, ... = parts),
                                       or a binary mask (0 / 255), at the image's size.

The names of the classes may go into labels.json (beside this file): {{"classes": ["background", "horse", ...]}}.
They were picked from {pool} ({n_pool} images) as representatives of its {n_clusters} largest clusters
(selected.csv: rank 1 = largest cluster). Then: {next_step}
"""


@dataclass
class Selection:
    """The picks, in rank order: positions into the pool, the cluster each represents and its size, how many pool
    members each pick stands for, and its score (cosine similarity to the mean of those members)."""

    index: np.ndarray
    cluster: np.ndarray
    cluster_size: np.ndarray
    represents: np.ndarray
    score: np.ndarray
    n_clusters: int
    method: str


# ------------------------------------------------------------------------------------------------------ embedding


def pixel_features(images: np.ndarray) -> np.ndarray:
    """``[N, H, W, C]`` uint8 -> ``[N, H*W*C]`` float32: scaled to [0, 1], centred by the mean image, unit rows."""
    from autolabel.data.pools import l2_normalize

    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return l2_normalize(x - x.mean(0, keepdims=True))


def embed_pool(images: str | os.PathLike, *, embedder: str = "pixels", weights: str | None = None,
               checkpoint: str | None = None, image_size: int = 0, batch_size: int = 64, device: str = "cpu",
               out: str | os.PathLike, progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Embed the pool into the feature pool ``out`` (.npz with ``features`` and ``ids``); returns ``n``, ``dim``,
    ``path``, ``embedder`` (what was used). ``checkpoint``: a ``fit classifier`` checkpoint (takes precedence)."""
    from autolabel.data.images import ImageFolderDataset, load_image
    from autolabel.data.pools import FeaturePool, save_feature_pool

    if checkpoint:
        from autolabel.tasks.classifier_module import embed_folder

        info = embed_folder(checkpoint, images, out, batch_size=batch_size, device=device, progress=progress)
        return {**info, "embedder": f"checkpoint:{checkpoint}"}
    if embedder != "pixels":
        from autolabel.data.embedders import embed_with, load_embedder

        model, spec = load_embedder(embedder, weights)
        size = image_size or spec.get("image_size", 224)
        info = embed_with(model, images, out, image_size=size, mean=spec["mean"], std=spec["std"],
                          batch_size=batch_size, device=device, progress=progress)  # fmt: skip
        return {**info, "embedder": embedder}
    size = image_size or 16
    if size < 2:
        raise ConfigError(f"image_size={size}: the pixel embedder needs >= 2 pixels a side (default 16)")
    ds = ImageFolderDataset(images, size, 3, with_labels=False)
    arr = np.stack([load_image(f, size, 3) for f in ds.files])
    feats = pixel_features(arr)
    path = save_feature_pool(out, FeaturePool(feats, None, np.array(ds.ids)))
    return {"n": len(ds), "dim": int(feats.shape[1]), "path": str(path), "embedder": f"pixels:{size}"}


# ------------------------------------------------------------------------------------------------------ picking


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _nearest(features: np.ndarray, members: np.ndarray, centre: np.ndarray, exclude: set[int]) -> int:
    """The member (a pool position) with the highest cosine similarity to ``centre``, not in ``exclude``."""
    sims = features[members] @ _unit(centre)
    for j in np.argsort(-sims, kind="stable"):
        if int(members[j]) not in exclude:
            return int(members[j])
    raise DataError("no member left to pick in a cluster")  # callers never ask for more picks than members


def allocate(sizes: np.ndarray, n: int) -> np.ndarray:
    """Picks per cluster (clusters ordered largest first): one each for the ``n`` largest, then D'Hondt over the
    sizes (the next pick goes to the cluster with the most members per pick so far), never more than its size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if n > int(sizes.sum()):
        raise DataError(f"n={n} picks but the pool holds {int(sizes.sum())} images: use n <= {int(sizes.sum())}")
    picks = np.zeros(len(sizes), dtype=np.int64)
    picks[: min(n, len(sizes))] = 1
    for _ in range(n - int(picks.sum())):
        quotient = np.where(picks < sizes, sizes / (picks + 1.0), -1.0)
        picks[int(np.argmax(quotient))] += 1  # ties: the larger (earlier) cluster
    return picks


def pick_representatives(features: np.ndarray, labels: np.ndarray, n: int, *, density: np.ndarray | None = None,
                         seed: int = 0, method: str = "kmeans") -> Selection:  # fmt: skip
    """``n`` pool positions that represent the clustering ``labels`` of the unit-row ``features`` (module docstring).
    ``density`` (Hi-LANDER's predicted density): each cluster's first pick is its densest member (its peak) instead of
    the member nearest its centroid."""
    from autolabel.hilander.baselines import kmeans_cluster

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if n < 1:
        raise ConfigError(f"n={n}: pick at least 1 image")
    if n > len(features):
        raise DataError(f"n={n} but the pool holds {len(features)} images: use n <= {len(features)}")
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    first = np.array([np.flatnonzero(inverse == c)[0] for c in range(len(ids))])
    order = np.lexsort((first, -counts))  # largest first; ties: the cluster met first in the pool
    alloc = allocate(counts[order], n)
    picked: list[tuple[int, int, int, int, float, int]] = []  # (round, cluster rank, position, represents, score)
    taken: set[int] = set()
    for rank_c, (c, m) in enumerate(zip(order, alloc)):
        if m == 0:
            continue
        members = np.flatnonzero(inverse == c)
        centroid = features[members].mean(0)
        if density is not None:
            rep = int(members[np.lexsort((members, -np.asarray(density)[members]))[0]])
        else:
            rep = _nearest(features, members, centroid, taken)
        taken.add(rep)
        rep_score = float(features[rep] @ _unit(centroid))
        if m == 1:
            picked.append((0, rank_c, rep, len(members), rep_score, int(c)))
            continue
        # spread the other m - 1 picks: k-means (k = m) inside the cluster, the member nearest each sub-centroid;
        # the first pick then stands for its own sub-cluster
        sub = kmeans_cluster(features[members], int(m), seed=seed, nredo=1)
        picked.append((0, rank_c, rep, int((sub == sub[members == rep][0]).sum()), rep_score, int(c)))
        sub_ids, sub_counts = np.unique(sub, return_counts=True)
        extra = 0
        for s in sub_ids[np.argsort(-sub_counts, kind="stable")]:
            part = members[sub == s]
            if rep in set(part.tolist()) or extra == m - 1:
                continue
            centre = features[part].mean(0)
            p = _nearest(features, part, centre, taken)
            taken.add(p)
            extra += 1
            picked.append((extra, rank_c, p, len(part), float(features[p] @ _unit(centre)), int(c)))
        while extra < m - 1:  # empty or merged sub-clusters: the member least similar to every pick so far
            rest = np.array([i for i in members if int(i) not in taken])
            chosen = np.array(sorted(taken))
            p = int(rest[np.argmin((features[rest] @ features[chosen].T).max(1))])
            taken.add(p)
            extra += 1
            picked.append((extra, rank_c, p, 1, 1.0, int(c)))
    picked.sort(key=lambda t: (t[0], t[1]))
    size_of = dict(zip(ids.tolist(), counts.tolist()))
    return Selection(
        index=np.array([t[2] for t in picked], dtype=np.int64),
        cluster=np.array([ids[t[5]] for t in picked]),
        cluster_size=np.array([size_of[ids[t[5]]] for t in picked], dtype=np.int64),
        represents=np.array([t[3] for t in picked], dtype=np.int64),
        score=np.array([t[4] for t in picked], dtype=np.float64),
        n_clusters=len(ids),
        method=method,
    )


def cluster_for_selection(pool_npz: str | os.PathLike, n: int, *, lander: str | None = None, cluster_cfg: Any = None,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:  # fmt: skip
    """Cluster labels of the pool (Hi-LANDER with ``lander``, else k-means with k = n), the predicted densities
    (Hi-LANDER) and info (method, number of clusters, tau)."""
    from autolabel.data.pools import load_feature_pool
    from autolabel.hilander.baselines import kmeans_cluster

    if lander:
        from autolabel.config.hilander import HiLanderClusterConfig
        from autolabel.hilander.clustering import cluster_features

        res = cluster_features(lander, pool_npz, cluster_cfg or HiLanderClusterConfig())
        density = res["columns"].get("density")
        info = {"method": "hilander", "tau": float(res["tau"]), "tau_source": str(res["tau_source"])}
        if "warning" in res:  # the calibrated tau left the pool degenerate (and was replaced, by default)
            info["warning"] = res["warning"]
        return np.asarray(res["labels"]), density, info
    pool = load_feature_pool(pool_npz)
    return kmeans_cluster(pool.features, n, seed=seed), None, {"method": "kmeans"}


# ------------------------------------------------------------------------------------------------------ writing


def flat_name(image_id: str, suffix: str) -> str:
    """A pool id (a path without extension, maybe in subfolders) as one flat file name."""
    return image_id.replace("/", "__").replace("\\", "__") + suffix


def contact_sheet(paths: list[Path], captions: list[str], out: str | os.PathLike, tile: int = 96,
                  ncol: int = 8) -> Path:  # fmt: skip
    """The picks as one PNG: each image scaled to ``tile`` px (nearest for small images) above its caption."""
    import torch
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    from autolabel.data.images import image_array, open_image
    from autolabel.engine.io import atomic_write_bytes

    band = 14
    tiles = []
    for p, text in zip(paths, captions):
        with open_image(p) as im:
            arr = image_array(im, 3)
        pic = Image.fromarray(arr)
        pic.thumbnail((tile, tile), Image.BILINEAR)
        if max(pic.size) < tile:  # small images: upscale without blurring
            scale = tile / max(pic.size)
            pic = pic.resize((max(1, round(pic.width * scale)), max(1, round(pic.height * scale))), Image.NEAREST)
        canvas = Image.new("RGB", (tile, tile + band), "white")
        canvas.paste(pic, ((tile - pic.width) // 2, (tile - pic.height) // 2))
        ImageDraw.Draw(canvas).text((2, tile + 1), text, fill=(20, 20, 20))
        tiles.append(torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1))
    grid = make_grid(torch.stack(tiles), nrow=min(ncol, len(tiles)), padding=2, pad_value=255)
    import io

    buf = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return atomic_write_bytes(out, buf.getvalue())


def write_selection(sel: Selection, files: list[Path], ids: list[str], pool_dir: str | os.PathLike,
                    out: str | os.PathLike, next_step: str) -> dict[str, Path]:  # fmt: skip
    """``selected.csv``, ``images/``, an empty ``masks/`` + ``LABEL_ME.txt`` and ``contact_sheet.png`` in ``out``."""
    import csv
    import io

    from autolabel.engine.io import atomic_write_bytes, atomic_write_text

    out = Path(out)
    img_dir, mask_dir = out / "images", out / "masks"
    if img_dir.is_dir():  # a rerun: the images of an earlier selection go (masks/ is never touched here)
        shutil.rmtree(img_dir)
    img_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "id", "source", "cluster", "cluster_size", "represents", "score"])
    copies, captions = [], []
    for r, (i, c, size, rep, s) in enumerate(
        zip(sel.index, sel.cluster, sel.cluster_size, sel.represents, sel.score), start=1
    ):
        src = files[int(i)].resolve()
        dst = img_dir / flat_name(ids[int(i)], src.suffix.lower())
        atomic_write_bytes(dst, src.read_bytes())
        copies.append(dst)
        captions.append(f"#{r} c{c} n={size}")
        w.writerow([r, dst.stem, str(src), c, int(size), int(rep), f"{s:.4f}"])
    atomic_write_text(out / "selected.csv", buf.getvalue())
    text = LABEL_ME.format(pool=pool_dir, n_pool=len(files), n_clusters=min(sel.n_clusters, len(sel.index)),
                           next_step=next_step)  # fmt: skip
    atomic_write_text(out / "LABEL_ME.txt", text)
    sheet = contact_sheet(copies, captions, out / "contact_sheet.png")
    return {"selected": out / "selected.csv", "images": img_dir, "masks": mask_dir, "contact_sheet": sheet}


def select_images(images: str | os.PathLike, n: int, out: str | os.PathLike, *, embedder: str = "pixels",
                  weights: str | None = None, checkpoint: str | None = None, lander: str | None = None,
                  cluster_cfg: Any = None, image_size: int = 0, seed: int = 0, device: str = "cpu",
                  next_step: str = "", progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Embed, cluster and pick ``n`` images of the pool ``images``; write everything into ``out`` (module docstring).
    Returns ``outputs`` (paths) and ``metrics`` (pool size, clusters, method, embedder, picks' mean score...)."""
    from autolabel.data.images import list_images
    from autolabel.data.pools import load_feature_pool

    if n < 1:
        raise ConfigError(f"n={n}: pick at least 1 image to label")
    root = Path(images)
    try:
        files = list_images(root)
    except DataError as e:
        raise DataError(f"images={images}: the pool is empty or missing ({e}) -- give a folder of images") from None
    if n > len(files):
        raise DataError(f"n={n} but images={images} holds {len(files)} images: use n <= {len(files)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    emb = embed_pool(root, embedder=embedder, weights=weights, checkpoint=checkpoint, image_size=image_size,
                     device=device, out=out / "pool.npz", progress=progress)  # fmt: skip
    pool = load_feature_pool(emb["path"])
    ids = (
        [str(i) for i in pool.ids]
        if pool.ids is not None
        else [str(f.relative_to(root).with_suffix("")) for f in files]
    )
    labels, density, info = cluster_for_selection(emb["path"], n, lander=lander, cluster_cfg=cluster_cfg, seed=seed)
    sel = pick_representatives(pool.features, labels, n, density=density, seed=seed, method=info["method"])
    outputs = write_selection(sel, files, ids, root, out, next_step)
    outputs["features"] = Path(emb["path"])
    metrics = {
        "pool_images": len(files),
        "selected": len(sel.index),
        "clusters": int(sel.n_clusters),
        "clusters_covered": int(len(set(sel.cluster.tolist()))),
        "pool_share_covered": float(np.isin(labels, sel.cluster).mean()),  # pool images in a cluster with a pick
        "mean_score": float(sel.score.mean()),
        "embedder": emb["embedder"],
        "feature_dim": int(emb["dim"]),
        **info,
    }
    return {"outputs": outputs, "metrics": metrics}
