"""Where this process runs: its rank among the processes a launcher started, and its training device.

The one home of rank / device detection. torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), SLURM (``SLURM_PROCID``,
``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``) and Lightning's DDP launcher (``LOCAL_RANK`` + ``NODE_RANK``) are read
from the environment; nothing here imports torch at module level.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from autolabel.errors import ConfigError


def global_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's global rank from the launcher's environment (0 when not distributed).

    torchrun and SLURM give it directly (``RANK``, ``SLURM_PROCID``); ranks that Lightning's DDP launcher starts have
    ``LOCAL_RANK`` plus ``NODE_RANK``, and on a node > 0 even local rank 0 is not global rank 0.
    """
    env = os.environ if env is None else env
    for var in ("RANK", "SLURM_PROCID", "PMI_RANK"):
        if var in env:
            try:
                return int(env[var])
            except ValueError:
                continue
    try:
        local = int(env.get("LOCAL_RANK", 0))
        node = int(env.get("NODE_RANK", env.get("GROUP_RANK", 0)))
        per_node = int(env.get("LOCAL_WORLD_SIZE", 0)) or max(local + 1, 1)
    except ValueError:
        return 0
    return node * per_node + local


def launcher_token(env: Mapping[str, str] | None = None) -> str | None:
    """A token every rank of one torchrun / SLURM launch computes alike (None outside such a launcher)."""
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env:
        keys = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT")
        return "torchrun:" + ":".join(env.get(k, "") for k in keys)
    if "SLURM_JOB_ID" in env:
        return "slurm:" + ":".join(env.get(k, "") for k in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT"))
    return None


def launcher_rank(env: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` of this process when a launcher started several: an initialized
    torch.distributed group, torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), a SLURM step (``SLURM_PROCID``,
    ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``; set by srun, not in the batch script itself) or Lightning's DDP
    launcher (``WORLD_SIZE``, ``LOCAL_RANK``, ``NODE_RANK``). None for one process."""
    import torch.distributed as dist

    env = os.environ if env is None else env
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size(), int(env.get("LOCAL_RANK", "0"))
    for r, w, loc in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID")):
        if r in env and w in env:
            try:
                rank, world, local = int(env[r]), int(env[w]), int(env.get(loc, "0"))
            except ValueError as e:
                raise ConfigError(
                    f"launcher variables {r}={env[r]!r}, {w}={env[w]!r} are not integers: fix the launch command"
                ) from e
            if world > 1:
                if not 0 <= rank < world:
                    raise ConfigError(f"{r}={rank} outside [0, {w}={world}): fix the launch command")
                return rank, world, local
    if "WORLD_SIZE" in env and "LOCAL_RANK" in env:  # Lightning's DDP launcher: LOCAL_RANK + NODE_RANK, no RANK
        try:
            world, local, node = int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]), int(env.get("NODE_RANK", "0"))
            per_node = int(env.get("LOCAL_WORLD_SIZE", "0"))
        except ValueError as e:
            raise ConfigError("WORLD_SIZE/LOCAL_RANK/NODE_RANK are not integers: fix the launch command") from e
        if world > 1:
            if node > 0 and per_node < 1:
                raise ConfigError(
                    f"NODE_RANK={node} without RANK or LOCAL_WORLD_SIZE: this process's global rank is unknown -- "
                    "launch with torchrun or srun (they set RANK / SLURM_PROCID)"
                )
            return node * per_node + local, world, local
    return None


def _device_list(devices: Any) -> list[int] | None:
    """``trainer.devices`` as a list of device ids when it names them (``[0, 2]`` or ``"0,2"``), else None."""
    if isinstance(devices, str) and "," in devices:
        return [int(d) for d in devices.split(",") if d.strip()]
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    return None


def multi_device(trainer: Any) -> bool:
    """Whether the trainer settings (``devices``, ``num_nodes``, ``accelerator``) place a run on several processes."""
    if int(getattr(trainer, "num_nodes", 1) or 1) > 1:
        return True
    d = trainer.devices
    ids = _device_list(d)
    if ids is not None:
        return len(ids) > 1
    s = str(d).strip()
    if s.isdigit():
        return int(s) > 1
    if s not in ("auto", "-1") or str(trainer.accelerator) == "cpu":  # auto / -1 on CPU is one process
        return False
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 1


def training_device(trainer: Any) -> Any:
    """The device this process trains on under the trainer settings (work done beside Lightning, such as inversion,
    runs there too): ``cuda:<i>`` for GPU accelerators (``i`` from ``LOCAL_RANK`` and ``trainer.devices`` when it
    lists ids), ``mps``, else the CPU."""
    import torch

    acc = str(trainer.accelerator).lower()
    if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        ids = _device_list(trainer.devices)
        index = ids[local] if ids is not None and local < len(ids) else local
        return torch.device("cuda", index % max(torch.cuda.device_count(), 1))
    mps = getattr(torch.backends, "mps", None)
    if acc in ("auto", "mps") and mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def inference_device(accelerator: str) -> str:
    """``cuda`` when ``accelerator`` allows a GPU and one is visible, else ``cpu`` (single-process inference)."""
    import torch

    return "cuda" if torch.cuda.is_available() and str(accelerator).lower() in ("auto", "gpu", "cuda") else "cpu"
