"""The first stages of the ``label_loop`` pipeline: the unlabeled pool (``pool``), which of its images to label
(``select``, :mod:`autolabel.selection`) and the labels a person puts in for them (``labeled``).

``labeled`` waits for people: it needs one mask per selected image in ``<run>/select/masks/``. Until they are all
there it stops the run with :class:`AwaitingLabels` (``autolabel run`` prints where to put them and exits with status
3); rerunning the same command resumes at this stage. ``select.oracle=true`` (the bundled procedural data, benchmarks,
tests) copies the ground-truth masks instead; with your own folders, ``select.oracle_masks=DIR`` names them.
The stage copies the selected images and their masks into ``<run>/labeled/``: a snapshot of what the label generator
trains on.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from autolabel.errors import AutolabelError, ConfigError, DataError
from pipelines.runner import Stage, StageContext

WAITING_EXIT = 3  # `autolabel run`'s exit status while a pipeline waits for labels


class AwaitingLabels(AutolabelError):
    """The pipeline stopped because it needs labels a person has not put in yet (not a failure)."""


@dataclass
class SelectStageConfig:
    """Which images of the pool to label (``label_loop``): ``n`` picks, how the pool is embedded, the oracle."""

    n: int = 16  # images to label
    embedder: str = "pixels"  # pixels (downsampled, centred, L2-normalized) | torchscript:FILE | timm:NAME
    weights: Optional[str] = None  # embedder=timm:NAME: its local weights file
    checkpoint: Optional[str] = None  # a `fit classifier` checkpoint to embed with instead
    lander: Optional[str] = None  # a Hi-LANDER checkpoint meta-trained on features of this embedder: cluster with it
    image_size: int = 0  # embedder input side (0: 16 for pixels, the model's own otherwise)
    seed: int = 0
    oracle: bool = False  # copy ground-truth masks instead of waiting for a person (procedural data, benchmarks)
    oracle_masks: Optional[str] = None  # data.source=folders + oracle: the pool's ground-truth masks (same stems)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"select.n={self.n}: pick at least 1 image to label")
        if self.image_size < 0:
            raise ConfigError(f"select.image_size={self.image_size} must be >= 0 (0: the embedder's default)")


# --------------------------------------------------------------------------------------------------------- pool


def stage_pool(ctx: StageContext) -> dict[str, Any]:
    """The unlabeled pool (and a labeled test folder when there is one): rendered procedural shapes, or your
    folders (``data.images``, optional ``data.test``)."""
    d = ctx.cfg.data
    if d.source_for(handsoff=True) == "procedural":
        from autolabel.data.procedural import make_shapes_dataset

        s = ctx.cfg.shapes
        pool = make_shapes_dataset(ctx.dir / "pool", s.n_pool, size=s.size, seed=s.seed)
        test = make_shapes_dataset(ctx.dir / "test", s.n_test, size=s.size, seed=s.seed + 2)
        outputs = {"images": pool / "images", "test": test, "oracle_masks": pool / "masks"}
        return {"outputs": outputs, "metrics": {"pool_images": s.n_pool, "test_images": s.n_test}}
    from autolabel.data.layout import image_folder, select_labeled

    images = Path(d.folder("images")).expanduser().resolve()  # type: ignore[arg-type]
    outputs: dict[str, Path] = {"images": images}
    metrics: dict[str, Any] = {"pool_images": len(image_folder("images", str(images)))}
    test_dir = d.folder("test", optional=True)
    if test_dir:
        test = select_labeled("test", test_dir, d.test_masks, ctx.cfg.labels.model.task)
        outputs["test"] = test.materialize(ctx.dir / "test") if test.needs_copy else test.root
        metrics["test_images"] = len(test.stems)
    if ctx.cfg.select.oracle_masks:
        outputs["oracle_masks"] = Path(ctx.cfg.select.oracle_masks).expanduser().resolve()
    return {"outputs": outputs, "metrics": metrics}


def validate_pool(cfg: Any) -> None:
    """Fail before any work when a folders-source label_loop lacks its pool (or its test folder is malformed)."""
    from autolabel.data.layout import image_folder, select_labeled

    d, s = cfg.data, cfg.select
    if d.source_for(handsoff=True) != "folders":
        return
    image_folder("images", d.folder("images"))  # type: ignore[arg-type]
    test = d.folder("test", optional=True)
    if test:
        select_labeled("test", test, d.test_masks, cfg.labels.model.task)
    if s.oracle and not s.oracle_masks:
        raise ConfigError("select.oracle=true with your own folders needs select.oracle_masks=DIR (ground-truth "
                          "masks of the pool, same names); or leave select.oracle=false and label the picks")  # fmt: skip
    if s.oracle_masks and not Path(s.oracle_masks).is_dir():
        raise DataError(f"select.oracle_masks={s.oracle_masks}: folder not found")


POOL_DATA_KEYS = ("source", "root", "images", "test", "test_masks")
POOL = Stage(
    "pool",
    stage_pool,
    config_keys=["shapes", *(f"data.{k}" for k in POOL_DATA_KEYS), "select.oracle_masks", "labels.model.task"],
    description="render the procedural pool, or check your image folders",
)


# --------------------------------------------------------------------------------------------------------- select


def stage_select(ctx: StageContext) -> dict[str, Any]:
    from autolabel.engine.dist import inference_device
    from autolabel.selection import select_images

    s: SelectStageConfig = ctx.cfg.select
    device = "cpu" if ctx.cfg.trainer.accelerator == "cpu" else inference_device("auto")
    res = select_images(
        ctx.input_path("pool", "images"),
        s.n,
        ctx.dir,
        embedder=s.embedder,
        weights=s.weights,
        checkpoint=s.checkpoint,
        lander=s.lander,
        image_size=s.image_size,
        seed=s.seed,
        device=device,
        next_step="rerun the same `autolabel run` command: it resumes here.",
        progress=ctx.cfg.progress,
    )
    out = res["outputs"]
    return {
        "outputs": {k: out[k] for k in ("selected", "images", "masks", "contact_sheet")},
        "metrics": res["metrics"],
        "figures": [str(out["contact_sheet"])],
        "captions": {str(out["contact_sheet"]): "the images picked for labeling (rank, cluster, cluster size)"},
    }


SELECT = Stage(
    "select",
    stage_select,
    needs=["pool"],
    config_keys=[
        "select.n",
        "select.embedder",
        "select.weights",
        "select.checkpoint",
        "select.lander",
        "select.image_size",
        "select.seed",
    ],  # fmt: skip
    description="embed and cluster the pool, pick the images to label",
)


# --------------------------------------------------------------------------------------------------------- labeled


def _oracle_source(oracle: Path, source: Path, pool: Path) -> Path | None:
    try:
        rel = source.resolve().relative_to(pool.resolve()).with_suffix(".png")
    except ValueError:
        rel = Path(source.name).with_suffix(".png")
    for cand in (oracle / rel, oracle / rel.name):
        if cand.is_file():
            return cand
    return None


def stage_labeled(ctx: StageContext) -> dict[str, Any]:
    """Wait for (or, with the oracle, copy) one mask per selected image; snapshot images + masks into this stage."""
    s: SelectStageConfig = ctx.cfg.select
    sel = ctx.inputs["select"]["outputs"]
    img_dir, mask_dir = Path(sel["images"]), Path(sel["masks"])
    pool = ctx.input_path("pool", "images")
    rows = list(csv.DictReader(Path(sel["selected"]).open(encoding="utf-8")))
    if s.oracle:
        oracle = ctx.inputs["pool"]["outputs"].get("oracle_masks")
        if not oracle:
            raise ConfigError("select.oracle=true needs ground-truth masks: set select.oracle_masks=DIR")
        for r in rows:
            src = _oracle_source(Path(oracle), Path(r["source"]), pool)
            if src is None:
                raise DataError(f"select.oracle: no ground-truth mask for {r['source']} in {oracle}")
            if not (mask_dir / f"{r['id']}.png").is_file():
                shutil.copyfile(src, mask_dir / f"{r['id']}.png")
        names = Path(oracle).parent / "labels.json"
        if names.is_file() and not (img_dir.parent / "labels.json").is_file():
            shutil.copyfile(names, img_dir.parent / "labels.json")
    missing = [r["id"] for r in rows if not (mask_dir / f"{r['id']}.png").is_file()]
    if missing:
        raise AwaitingLabels(
            f"waiting for labels: {len(missing)} of {len(rows)} selected images in {img_dir} have no mask in "
            f"{mask_dir} (first: {missing[0]}.png; see LABEL_ME.txt and contact_sheet.png beside it); put them in, then "
            "rerun the same command to resume"
        )
    out = ctx.dir / "labeled"
    for r in rows:
        image = next(img_dir.glob(f"{r['id']}.*"))
        for src, dst in (
            (image, out / "images" / image.name),
            (mask_dir / f"{r['id']}.png", out / "masks" / f"{r['id']}.png"),
        ):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    for meta in ("labels.json", "labelmap.txt"):
        if (img_dir.parent / meta).is_file():
            shutil.copyfile(img_dir.parent / meta, out / meta)
    outputs = {"labeled": out, **{k: v for k, v in ctx.inputs["pool"]["outputs"].items() if k in ("images", "test")}}
    return {"outputs": outputs, "metrics": {"labeled_images": len(rows), "oracle": bool(s.oracle)}}


LABELED = Stage(
    "labeled",
    stage_labeled,
    needs=["pool", "select"],
    config_keys=["select.oracle", "select.oracle_masks"],
    description="the selected images' masks (waits for a person unless select.oracle=true)",
)
