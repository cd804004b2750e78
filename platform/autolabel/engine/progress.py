"""Training progress for logs: when the console is not a terminal (a log file, a cluster job, CI), a progress bar
rewrites itself thousands of times into the file; :class:`LogProgress` prints a plain line a few times per run
instead -- step, share done, the progress-bar metrics, speed and time left."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LogProgress(Callback):
    """One line per ``1 / lines`` of the training batches (and one at the end), on global rank 0 only, e.g.
    ``  step 300/1563 (19%)  train/loss=0.412  4.1 steps/s, 5m08s left``: a step is one training batch (one
    iteration of both networks for a GAN). Without a finite total a line is printed every ``fallback_every``
    steps."""

    def __init__(self, lines: int = 10, fallback_every: int = 500) -> None:
        if lines < 1 or fallback_every < 1:
            raise ValueError(f"lines={lines} and fallback_every={fallback_every} must be >= 1")
        self.lines, self.fallback_every = int(lines), int(fallback_every)
        self.total: int | None = None
        self.next_step = 0
        self.start_step, self.start_time = 0, 0.0

    @staticmethod
    def done(trainer: pl.Trainer) -> int:
        """Training batches done so far, this run and the runs it resumed (restored with the loop state)."""
        return int(trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    @staticmethod
    def _total(trainer: pl.Trainer, pl_module: pl.LightningModule) -> int | None:
        """Training batches of the whole run: the smaller of ``max_steps`` (when each batch is one optimizer step:
        automatic optimization; a GAN steps two optimizers per batch) and ``max_epochs`` x batches per epoch; None
        if neither is finite."""
        bounds = []
        if trainer.max_steps and trainer.max_steps > 0 and pl_module.automatic_optimization:
            bounds.append(int(trainer.max_steps))
        per_epoch, epochs = trainer.num_training_batches, trainer.max_epochs
        if epochs is not None and epochs > 0 and math.isfinite(float(per_epoch)) and per_epoch > 0:
            bounds.append(int(epochs * per_epoch))
        return min(bounds) if bounds else None

    def _every(self) -> int:
        return max(1, math.ceil(self.total / self.lines)) if self.total else self.fallback_every

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.total = self._total(trainer, pl_module)
        self.start_step, self.start_time = self.done(trainer), time.monotonic()
        every = self._every()
        self.next_step = (self.start_step // every + 1) * every  # a resumed run continues the same schedule

    def line(self, trainer: pl.Trainer, step: int) -> str:
        """The progress line after ``step`` training batches."""
        done = f"step {step}/{self.total} ({100 * step / self.total:.0f}%)" if self.total else f"step {step}"
        metrics = "  ".join(f"{k}={float(v):.4g}" for k, v in sorted(trainer.progress_bar_metrics.items())
                            if not isinstance(v, str))  # fmt: skip
        elapsed = time.monotonic() - self.start_time
        rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
        speed = f"{rate:.3g} steps/s" if rate > 0 else ""
        if rate > 0 and self.total:
            speed += f", {_duration((self.total - step) / rate)} left"
        return "  ".join(p for p in (f"  {done}", metrics, speed) if p)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kw: Any) -> None:
        step = self.done(trainer)
        if step < self.next_step and not (self.total and step >= self.total):
            return
        self.next_step = (step // self._every() + 1) * self._every()
        if trainer.is_global_zero:
            print(self.line(trainer, step), flush=True)
