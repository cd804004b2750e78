"""Synthesis on several processes: one shard per rank, merged by rank 0.

Three ways to run :func:`run_synthesis`: one process; ``devices > 1`` processes spawned here (one per device); or --
when a launcher (torchrun, srun, Lightning's DDP) started this process as one of several -- this rank's shard, after
which every rank waits for the others and rank 0 merges. Ranks synchronize with torch.distributed when a group exists
(or torchrun's ``MASTER_ADDR`` allows one), else through the shard files (``manifest.rank{r}.jsonl`` appears when rank
r finished, ``manifest.jsonl`` after the merge; both are deterministic, so a rerun's leftovers equal what they stand
for).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autolabel.engine.dist import launcher_rank
from autolabel.errors import ConfigError, DataError


@dataclass(frozen=True)
class _Plan:
    """Everything a synthesis worker needs (picklable: spawned workers receive it)."""

    checkpoint: str
    out: str
    generator: str | None
    n: int
    seed: int
    truncation_psi: float
    noise_mode: str
    batch_size: int
    filter_fraction: float
    drop_least_uncertain: int
    save_uncertainty: bool
    progress: bool
    wait_timeout_s: float


def load_label_module(path: str | Path) -> Any:
    """A trained label-generator LightningModule (``last.ckpt`` of ``autolabel fit labels``), on the CPU."""
    from autolabel.engine.checkpoint_io import load_lightning_module
    from autolabel.handsoff.label_generator_module import LabelGeneratorModule

    return load_lightning_module(
        LabelGeneratorModule,
        path,
        what="label-generator checkpoint",
        hint="pass the last.ckpt written by `autolabel fit labels`",
    ).eval()


def _worker(rank: int, plan: _Plan, world: int, device: str, device_index: int | None = None) -> dict:
    import torch

    from autolabel.gan import load_generator
    from autolabel.handsoff.synthesis import synthesize

    index = rank if device_index is None else device_index
    dev = torch.device(f"cuda:{index}" if device == "cuda" else "cpu")
    module = load_label_module(plan.checkpoint)
    gen_path = plan.generator or module.hparams.generator_path
    if not gen_path:
        raise ConfigError(f"{plan.checkpoint} stores no generator path: pass generator=PATH")
    gen = load_generator(gen_path).to(dev).eval()
    extractor = module.make_extractor(gen)
    return synthesize(
        gen,
        module.ensemble.to(dev),
        extractor,
        plan.n,
        plan.out,
        seed=plan.seed,
        truncation_psi=plan.truncation_psi,
        noise_mode=plan.noise_mode,
        batch_size=plan.batch_size,
        filter_fraction=plan.filter_fraction,
        drop_least_uncertain=plan.drop_least_uncertain,
        rank=rank,
        world_size=world,
        save_uncertainty=plan.save_uncertainty,
        progress=plan.progress and rank == 0,
        label_checkpoint=plan.checkpoint,
        names=module.label_names(),  # class / keypoint names: into plan.json and manifest.jsonl
    )


def _spawn_entry(rank: int, plan: _Plan, world: int, device: str) -> None:
    import torch

    # the spawned ranks share this machine's cores (a launcher's ranks get theirs from torchrun/srun: untouched)
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    _worker(rank, plan, world, device)


def _wait_for(paths: list[Path], timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while True:
        missing = [p for p in paths if not p.exists()]
        if not missing:
            return
        if time.monotonic() - t0 > timeout_s:
            raise DataError(
                f"{missing[0]} did not appear within wait_timeout_s={timeout_s:g}s ({what}): rerun the unfinished "
                "ranks (they resume), or raise wait_timeout_s"
            )
        time.sleep(0.5)


def _launched(plan: _Plan, rank: int, world: int, local: int, device: str) -> dict[str, Any]:
    """One launched rank: synthesize this rank's shard, wait for every rank, rank 0 merges, every rank returns after
    the merge."""
    import torch.distributed as dist

    from autolabel.handsoff.synthesis import merge_manifests

    own_group = False
    env = os.environ
    if not (dist.is_available() and dist.is_initialized()) and "MASTER_ADDR" in env and "MASTER_PORT" in env:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        own_group = True
    use_dist = dist.is_available() and dist.is_initialized()
    out = Path(plan.out)
    try:
        stats = _worker(rank, plan, world, device, device_index=local)
        if use_dist:
            dist.barrier()
        elif rank == 0:
            _wait_for([out / f"manifest.rank{r}.jsonl" for r in range(world)], plan.wait_timeout_s, "a rank's shard")
        if rank == 0:
            stats.update(merge_manifests(out))
        if use_dist:
            dist.barrier()
        elif rank != 0:
            _wait_for([out / "manifest.jsonl"], plan.wait_timeout_s, "rank 0's merge")
    finally:
        if own_group:
            dist.destroy_process_group()
    if rank != 0:
        stats["n_written"] = sum(1 for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip())
    return {**stats, "rank": rank, "world_size": world}


def run_synthesis(
    checkpoint: str | Path,
    out: str | Path,
    settings: Any,
    *,
    generator: str | None = None,
    accelerator: str = "auto",
    save_uncertainty: bool = True,
    wait_timeout_s: float = 86400.0,
    progress: bool = True,
    launched: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """Synthesize ``settings.n`` labeled images into ``out`` with the label generator ``checkpoint``.

    ``settings`` holds ``n, seed, truncation_psi, noise_mode, batch_size, filter_fraction, drop_least_uncertain,
    devices``. One process, ``devices`` spawned processes, or -- when a launcher started this process as one of several
    (``launched``, default :func:`autolabel.engine.dist.launcher_rank`) -- this rank's shard, merged by rank 0.
    Returns the stats (with ``rank`` and ``world_size`` when launched)."""
    import torch

    from autolabel.engine.paths import check_output_dir
    from autolabel.handsoff.synthesis import merge_manifests

    # before any model is loaded: never mix synthetic samples into someone else's folder, never write over an input
    inputs = {"checkpoint": checkpoint, "generator": generator}
    check_output_dir(out, inputs, marker="plan.json", command="autolabel synthesize")
    plan = _Plan(
        str(checkpoint),
        str(out),
        generator,
        settings.n,
        settings.seed,
        settings.truncation_psi,
        settings.noise_mode,
        settings.batch_size,
        settings.filter_fraction,
        settings.drop_least_uncertain,
        save_uncertainty,
        progress,
        wait_timeout_s,
    )
    devices = int(settings.devices)
    device = accelerator
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    launched = launched if launched is not None else launcher_rank()
    if launched is not None:
        rank, world, local = launched
        if devices > 1:
            raise ConfigError(
                f"this process is rank {rank} of {world} started by a launcher (torchrun/srun), and "
                f"devices={devices} would spawn more per rank: leave devices=1"
            )
        if device == "cuda":  # srun --gpus-per-task=1 shows each rank one GPU (index 0); torchrun shows them all
            local = local % max(torch.cuda.device_count(), 1)
        return _launched(plan, rank, world, local, device)
    if device == "cuda" and devices > torch.cuda.device_count():
        raise ConfigError(f"devices={devices} but only {torch.cuda.device_count()} GPU(s) are visible")
    if devices == 1:
        return _worker(0, plan, 1, device)
    import torch.multiprocessing as mp

    mp.spawn(_spawn_entry, args=(plan, devices, device), nprocs=devices, join=True)
    return merge_manifests(plan.out)
