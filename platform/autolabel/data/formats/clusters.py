"""Clusters a person can act on: one folder per cluster of a ``clusters.csv``, largest first, with a contact sheet.

``out/<rank>_cluster-<id>_n<size>/`` holds the cluster's images (symbolic links to the originals, or copies with
``copy=True``); ``out/<rank>_cluster-<id>_n<size>.png`` is its contact sheet (up to ``sheet_max`` thumbnails, the
most confident first when the CSV has a ``confidence`` column, else in id order); ``out/clusters.json`` lists the
folders with cluster id, size and members. A CSV id matches an image by its path relative to ``images`` without
extension (the ids ``autolabel embed`` writes) or by its file stem.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from autolabel.errors import ConfigError, DataError


def export_cluster_folders(clusters_csv: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike, *,
                           copy: bool = False, sheet_max: int = 64, sheet_size: int = 64) -> dict:  # fmt: skip
    from autolabel.data.images import list_images
    from autolabel.engine.io import write_json
    from autolabel.viz import image_grid

    src, root, out = Path(clusters_csv), Path(images), Path(out)
    if not src.is_file():
        raise DataError(f"src={src} not found -- pass the clusters.csv written by `autolabel cluster`")
    rows = list(csv.DictReader(src.read_text(encoding="utf-8").splitlines()))
    if not rows or "id" not in rows[0] or "cluster" not in rows[0]:
        raise DataError(f"{src} is not a clusters.csv (header id,cluster) -- pass the file `autolabel cluster` wrote")
    if sheet_max < 1 or sheet_size < 8:
        raise ConfigError(f"sheet_max={sheet_max} and sheet_size={sheet_size}: need >= 1 thumbnail of >= 8 px")
    files = list_images(root)
    by_rel = {str(f.relative_to(root).with_suffix("")): f for f in files}
    by_stem: dict[str, Path | None] = {}
    for f in files:
        by_stem[f.stem] = None if f.stem in by_stem else f  # an ambiguous stem matches nothing
    groups: dict[str, list[tuple[float, str, Path]]] = {}
    missing = []
    for r in rows:
        f = by_rel.get(r["id"]) or by_stem.get(r["id"])
        if f is None:
            missing.append(r["id"])
            continue
        conf = float(r["confidence"]) if r.get("confidence") not in (None, "") else 0.0
        groups.setdefault(r["cluster"], []).append((conf, r["id"], f))
    if missing:
        raise DataError(f"{len(missing)} id(s) of {src} have no image under {root} (e.g. {missing[0]}): pass the "
                        "images= folder that was embedded")  # fmt: skip
    order = sorted(groups, key=lambda c: (-len(groups[c]), c))
    listing = []
    width = max(4, len(str(len(order))))
    for rank, cid in enumerate(order):
        members = sorted(groups[cid], key=lambda t: (-t[0], t[1]))
        name = f"{rank:0{width}d}_cluster-{cid}_n{len(members)}"
        folder = out / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for _, sid, f in members:
            dst = folder / (sid.replace("/", "__").replace(os.sep, "__") + f.suffix.lower())
            if copy:
                shutil.copy2(f, dst)
            else:
                dst.symlink_to(f.resolve())
        image_grid([f for _, _, f in members[:sheet_max]], out / f"{name}.png", ncol=8, size=sheet_size)
        listing.append({"folder": name, "cluster": cid, "size": len(members), "members": [m[1] for m in members]})
    write_json(out / "clusters.json", listing)
    return {"clusters": len(order), "images": sum(len(g) for g in groups.values()), "path": str(out),
            "largest": listing[0]["size"] if listing else 0}  # fmt: skip
