"""The synthesis stage: sample latents -> image + label, filter by ensemble uncertainty; under DDP every rank writes
its shard and rank 0 merges them (:func:`autolabel.handsoff.sharding.run_synthesis`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolabel.errors import ConfigError
from pipelines.runner import Stage, StageContext


@dataclass
class SynthesisStageConfig:
    """What to synthesize (the ``synthesis`` section of a pipeline; ``autolabel synthesize`` extends it)."""

    n: int = 300  # labeled images to keep after filtering
    seed: int = 0
    truncation_psi: float = 0.7
    # the generator's noise inputs: random = drawn per sample from its seed, as the GAN was trained (more varied
    # images; on the horses synthetic-only mIoU +0.010 / +0.022 over const, benchmarks/README.md); const = the
    # generator's fixed noise buffers for every sample
    noise_mode: str = "random"
    batch_size: int = 16
    filter_fraction: float = 0.1  # DatasetGAN: drop the most uncertain ~10% (and the 30 least uncertain)
    drop_least_uncertain: int = 30
    # > 1: one process per device (spawned here), each writes its own shard; rank 0 merges. Under torchrun / srun
    # (RANK + WORLD_SIZE, or SLURM_PROCID + SLURM_STEP_NUM_TASKS) each launched process is one rank instead: keep 1.
    devices: int = 1

    def __post_init__(self) -> None:
        if self.n < 1 or self.devices < 1:
            raise ConfigError(f"n={self.n} and devices={self.devices} must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")
        if self.noise_mode not in ("random", "const"):
            raise ConfigError(f"noise_mode={self.noise_mode!r} unknown: use random (per-sample noise, as in GAN "
                              "training) or const (the generator's fixed noise)")  # fmt: skip
        if not 0.0 <= self.filter_fraction < 1.0 or self.drop_least_uncertain < 0:
            raise ConfigError(
                f"filter_fraction={self.filter_fraction}, drop_least_uncertain={self.drop_least_uncertain}: "
                "need filter_fraction in [0, 1) and drop_least_uncertain >= 0"
            )


def synthesis_figures(
    out_dir: str | Path, fig_dir: str | Path, n_overlays: int = 24, n_examples: int = 8
) -> list[Path]:
    """Pictures of a finished synthetic dataset: ``synthetic_overlays.png`` (kept images with their labels drawn on)
    and ``uncertainty.png`` (score histogram of all candidates, kept vs filtered, and the least / most uncertain kept
    samples with their per-pixel uncertainty maps)."""
    import json

    import numpy as np
    from PIL import Image

    from autolabel.data.coords import rescale_xy
    from autolabel.engine.io import read_json
    from autolabel.handsoff.label_generator import SCORE_MEANING
    from autolabel.viz import colorize_depth, draw_keypoints, image_grid, overlay_mask, uncertainty_figure

    out, fig_dir = Path(out_dir), Path(fig_dir)
    plan = read_json(out / "plan.json")
    kept = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
    if not kept:
        return []

    def image(sid: str) -> np.ndarray:
        return np.asarray(Image.open(out / "images" / f"{sid}.png").convert("RGB"))

    def labeled(sid: str) -> np.ndarray:
        img = image(sid)
        if plan["task"] == "segmentation":
            mask = np.asarray(Image.open(out / "labels" / f"{sid}.png"))
            if mask.shape != img.shape[:2]:
                mask = np.asarray(Image.fromarray(mask).resize(img.shape[1::-1], Image.NEAREST))
            return overlay_mask(img, mask, alpha=0.5)
        if plan["task"] == "keypoints":
            lab = read_json(out / "labels" / f"{sid}.json")
            res = lab["resolution"]
            xy = rescale_xy(
                np.array([[k["x"], k["y"]] for k in lab["keypoints"]], dtype=np.float32),
                (res, res),
                (img.shape[1], img.shape[0]),
            )
            return draw_keypoints(img, xy, radius=max(1, img.shape[0] // 32))
        return colorize_depth(np.load(out / "labels" / f"{sid}.npy"))

    overlays = [labeled(r["id"]) for r in kept[:n_overlays]]
    figs = [image_grid(overlays, fig_dir / "synthetic_overlays.png", ncol=8, size=64)]
    if plan.get("classes") or plan.get("keypoint_names"):  # legend: the class / keypoint names in the overlay colours
        from autolabel.viz import append_legend, palette

        if plan.get("classes"):  # class 0 (background) is not drawn
            append_legend(figs[0], plan["classes"][1:], palette(len(plan["classes"]))[1:])
        else:
            append_legend(figs[0], plan["keypoint_names"], palette(len(plan["keypoint_names"]) + 1)[1:])
    records = [read_json(p) for p in sorted((out / "records").glob("*.json"))]
    kept_ids = {r["id"] for r in kept}
    by_score = sorted(kept, key=lambda r: r["uncertainty"])
    half = max(1, n_examples // 2)
    picks = by_score[:half] + [r for r in by_score[-half:] if r not in by_score[:half]]
    examples = []
    for r in picks:
        unc_path = out / "uncertainty" / f"{r['id']}.npy"
        if unc_path.is_file():
            examples.append((image(r["id"]), labeled(r["id"]), np.load(unc_path).astype(np.float32), r["uncertainty"]))
    if records:
        scores, kept_flags = [r["uncertainty"] for r in records], [r["id"] in kept_ids for r in records]
        meaning = SCORE_MEANING.get(plan["task"], SCORE_MEANING["segmentation"])
        figs.append(uncertainty_figure(scores, kept_flags, examples, fig_dir / "uncertainty.png", meaning))
    return figs


def stage_synthesis(ctx: StageContext) -> dict[str, Any]:
    from autolabel.engine.dist import global_rank
    from autolabel.handsoff.sharding import run_synthesis

    s: SynthesisStageConfig = ctx.cfg.synthesis
    out = ctx.dir / "synthetic"
    accelerator = "cpu" if ctx.cfg.trainer.accelerator == "cpu" else "auto"
    checkpoint = ctx.input_path("labels", "checkpoint")
    stats = run_synthesis(checkpoint, out, s, accelerator=accelerator, progress=ctx.cfg.progress)
    figures = synthesis_figures(out, ctx.dir) if global_rank() == 0 else []  # every rank wrote its shard, 0 merged
    metrics = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and k != "rank"}
    return {"outputs": {"dataset": out}, "metrics": metrics, "figures": [str(f) for f in figures]}


STAGE = Stage(
    "synthesis",
    stage_synthesis,
    needs=["labels"],
    config_keys=["synthesis"],
    description="synthesize labeled images, filter by uncertainty",
    distributed=True,  # distributed prediction: each DDP rank synthesizes its shard
)
