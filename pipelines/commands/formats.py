"""Label formats and acting on clusters: ``autolabel export`` and ``autolabel assign`` (the library does the work:
:mod:`autolabel.data.formats`, :mod:`autolabel.hilander.assign`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from pipelines.commands.base import Command, Invocation


@dataclass
class ExportCommand:
    src: str = MISSING  # synthetic dataset, labeled folder, COCO/VOC/YOLO dataset -- or a clusters.csv (format=folders)
    format: str = MISSING  # coco | yolo | voc | folders (clusters.csv -> one folder per cluster)
    out: str = MISSING  # the folder to write
    images: Optional[str] = None  # format=folders: the image folder the clusters' ids refer to
    copy: bool = False  # format=folders: copy the images instead of symbolic links
    task: Optional[str] = None  # segmentation | keypoints when src holds several label kinds
    ignore_index: int = 255  # mask value that is no class (VOC void borders); -1 = none


def export(cfg: ExportCommand, inv: Invocation) -> int:
    from autolabel.errors import ConfigError

    if cfg.format == "folders":
        from autolabel.data.formats.clusters import export_cluster_folders

        if not cfg.images:
            raise ConfigError("format=folders needs images=DIR (the folder whose images were clustered)")
        info = export_cluster_folders(cfg.src, cfg.images, cfg.out, copy=cfg.copy)
        print(f"{info['images']} images -> {info['clusters']} cluster folders (largest {info['largest']}): {cfg.out}")
        return 0
    from autolabel.data.formats import export_dataset

    info = export_dataset(
        cfg.src, cfg.format, cfg.out, task=cfg.task, ignore_index=None if cfg.ignore_index < 0 else cfg.ignore_index
    )
    names = info["keypoints"] if info["task"] == "keypoints" else info["classes"]
    print(f"{info['n']} {info['task']} samples -> {cfg.format}: {info['path']} ({', '.join(names)})")
    return 0


@dataclass
class AssignCommand:
    checkpoint: str = MISSING  # the Hi-LANDER checkpoint that clustered the pool
    clusters: str = MISSING  # the run directory (or its clusters.csv) of that clustering
    features: str = MISSING  # the new samples' features (.npz / .npy), embedded like the pool
    out: str = "assigned.csv"  # id,cluster,confidence,outcome,nearest
    pool: Optional[str] = None  # the features that were clustered (found in a run directory when unset)
    k: int = 10  # neighbours per sample in the joint kNN graph
    tau: Optional[float] = None  # link threshold; default: the run's (metrics.json), else 0.8
    device: str = "cpu"


def assign(cfg: AssignCommand, inv: Invocation) -> int:
    from autolabel.hilander.assign import assign_files

    info = assign_files(
        cfg.checkpoint, cfg.clusters, cfg.features, cfg.out, pool=cfg.pool, k=cfg.k, tau=cfg.tau, device=cfg.device
    )
    print(
        f"{info['n']} samples: {info['n_existing']} joined existing clusters, {info['n_new']} far from all "
        f"({info['new_clusters']} new cluster(s)) at tau={info['tau']:g}: {info['path']}"
    )
    return 0


COMMANDS = (
    Command(
        "export",
        "write a labeled dataset as COCO / YOLO / VOC, or clusters.csv as one folder per cluster",
        ExportCommand,
        export,
    ),
    Command(
        "assign",
        "assign new samples to the clusters of an earlier run (no re-clustering), with a confidence",
        AssignCommand,
        assign,
    ),
)
