"""One trainer factory for every training stage, plus crash-safe checkpoints and resume."""

from __future__ import annotations

import csv
import io
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.plugins.io import TorchCheckpointIO

from autolabel.config.core import TrainerConfig
from autolabel.engine.console import interactive, quiet_lightning
from autolabel.engine.io import atomic_write_bytes
from autolabel.engine.progress import LogProgress

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a temporary file and renames it, so a crash never leaves a truncated ``last.ckpt``; reads
    them (resume) through the project's safe loader (:mod:`autolabel.engine.checkpoint_io`)."""

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
        from autolabel.engine.checkpoint_io import load_checkpoint

        return load_checkpoint(path, map_location,
                               what="checkpoint to resume from",
                               hint="delete it (or pass run.resume=never) to start the stage afresh")  # fmt: skip

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(path, buf.getvalue())


class _ResumableCSVWriter(ExperimentWriter):
    """Lightning's CSV writer deletes ``metrics.csv`` when its folder is not empty, so a resumed run kept only the rows
    logged after the resume. This one keeps the earlier rows -- those before the first step the resumed run logs (rows
    an interrupted run logged past its last checkpoint are replaced by the rerun's) -- and leaves the file untouched
    when nothing new is logged (a finished run fitted again)."""

    def _check_log_dir_exists(self) -> None:
        self._earlier: list[dict[str, str]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self._earlier = list(csv.DictReader(f))

    def save(self) -> None:
        if self._earlier is not None and self.metrics:
            first = min(float(m["step"]) for m in self.metrics)
            kept = [{k: v for k, v in r.items() if v not in ("", None)} for r in self._earlier
                    if float(r.get("step") or 0) < first]  # fmt: skip
            self.metrics = kept + self.metrics
            self._record_new_keys()
            buf = io.StringIO(newline="")
            writer = csv.DictWriter(buf, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(self.metrics)
            atomic_write_bytes(self.metrics_file_path, buf.getvalue().encode())  # never a half-written log
            self.metrics, self._earlier = [], None
        super().save()  # hparams.yaml, then (appending) any rows not written above


class _ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment  # as Lightning's: the other ranks get a no-op writer
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableCSVWriter(log_dir=self.log_dir)
        return self._experiment


def seed_all(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and ``random``: called before a stage builds its models, so the initial
    weights depend on the configured seed only, not on what ran earlier in the same process.

    Not ``torch.manual_seed``: on a machine without an initialized CUDA/XPU/MTIA context it queues a lazy seed per
    backend and formats the whole call stack each time (about 1 ms inside a Lightning step:
    benchmarks/step_seeding.py), and :class:`StepSeeder` calls this before every batch. The CPU generator gets the
    same seed either way, so CPU runs are unchanged."""
    s = int(seed) % 2**63
    torch.default_generator.manual_seed(s)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(s)
    np.random.seed(s % 2**32)
    random.seed(s)


class StepSeeder(Callback):
    """Reseeds torch/numpy/random before every training batch from ``(seed, rank, epoch, batch)``.

    Randomness inside a step (augmentation, noise, dropout, sampled pixels or edges) then depends only on where the run
    is, not on what ran before -- so a run resumed from ``last.ckpt`` trains exactly like the uninterrupted one
    (together with :class:`autolabel.data.sampling.EpochShuffleSampler` for the batch order).
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        seed_all(hash((self.seed, trainer.global_rank, trainer.current_epoch, batch_idx)))


def _as_trainer_config(cfg: TrainerConfig | DictConfig | dict) -> TrainerConfig:
    if isinstance(cfg, TrainerConfig):
        return cfg
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    return TrainerConfig(**cfg)  # type: ignore[arg-type]


def checkpoint_dir(stage_dir: str | os.PathLike) -> Path:
    return Path(stage_dir) / "checkpoints"


def last_checkpoint(stage_dir: str | os.PathLike) -> Path | None:
    """``<stage_dir>/checkpoints/last.ckpt`` when it exists (what ``resume=auto`` continues from)."""
    p = checkpoint_dir(stage_dir) / LAST
    return p if p.is_file() else None


def build_trainer(
    cfg: TrainerConfig | DictConfig | dict,
    stage_dir: str | os.PathLike,
    *,
    callbacks: Sequence[Callback] = (),
    monitor: str | None = None,
    monitor_mode: str = "min",
    tensorboard: bool = True,
    **overrides: Any,
) -> pl.Trainer:
    """A ``pl.Trainer`` placed by ``cfg`` that logs and checkpoints into ``stage_dir``.

    ``stage_dir/checkpoints/last.ckpt`` (always) and ``best.ckpt`` (when ``monitor`` is given), ``stage_dir/logs/
    metrics.csv``, ``stage_dir/tb/`` TensorBoard events. Multi-GPU/multi-node comes from ``cfg.devices``,
    ``cfg.num_nodes`` and ``cfg.strategy``; SLURM and torchrun environments are detected by Lightning itself.
    """
    quiet_lightning()
    tc = _as_trainer_config(cfg)
    stage_dir = Path(stage_dir)
    # ``last.ckpt`` is its own unmonitored "top-1" checkpoint, rewritten every epoch (or every N steps): Lightning's
    # ``save_last`` only writes it when another checkpoint was saved in the same step, which with no monitor is never.
    ckpts: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoint_dir(stage_dir),
            filename=LAST.removesuffix(".ckpt"),
            save_top_k=1,
            every_n_train_steps=tc.checkpoint_every_n_steps or None,
            enable_version_counter=False,
        )
    ]
    if monitor:
        ckpts.append(
            ModelCheckpoint(
                dirpath=checkpoint_dir(stage_dir),
                filename="best",
                monitor=monitor,
                mode=monitor_mode,
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    loggers: list[Any] = [_ResumableCSVLogger(save_dir=str(stage_dir), name="logs", version="")]
    if tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(stage_dir), name="tb", version="", default_hp_metric=False))
    cbs: list[Callback] = [*ckpts, LearningRateMonitor(logging_interval="step"), StepSeeder(tc.seed), *callbacks]
    bar = tc.enable_progress_bar and interactive()  # a terminal: the bar; a log file: a few plain lines
    if bar:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, tc.log_every_n_steps)))
    elif tc.enable_progress_bar:
        cbs.append(LogProgress())
    kwargs: dict[str, Any] = dict(
        accelerator=tc.accelerator,
        devices=tc.devices,
        strategy=tc.strategy,
        num_nodes=tc.num_nodes,
        precision=tc.precision,
        max_steps=tc.max_steps,
        max_epochs=tc.max_epochs if tc.max_epochs is not None else (-1 if tc.max_steps > 0 else None),
        log_every_n_steps=tc.log_every_n_steps,
        gradient_clip_val=tc.gradient_clip_val,
        deterministic=tc.deterministic,
        enable_progress_bar=bar,
        check_val_every_n_epoch=tc.check_val_every_n_epoch,
        default_root_dir=str(stage_dir),
        logger=loggers,
        callbacks=cbs,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def fit(
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule | None,
    cfg: TrainerConfig | DictConfig | dict,
    stage_dir: str | os.PathLike,
    *,
    resume: bool = True,
    **trainer_kwargs: Any,
) -> pl.Trainer:
    """Seed, build the trainer, and fit -- continuing from ``last.ckpt`` when one exists and ``resume`` is set."""
    tc = _as_trainer_config(cfg)
    pl.seed_everything(tc.seed, workers=True, verbose=False)
    trainer = build_trainer(tc, stage_dir, **trainer_kwargs)
    ckpt = last_checkpoint(stage_dir) if resume else None
    if ckpt is not None and trainer.is_global_zero:
        print(f"resuming from {ckpt}", flush=True)  # the user's progress line (Lightning's own banner is dropped)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
    return trainer
