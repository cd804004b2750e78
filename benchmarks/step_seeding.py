"""Cost of reseeding before every training batch (StepSeeder), measured inside a real Lightning fit.

StepSeeder reseeds torch/numpy/random before each batch so a resumed run trains exactly like an uninterrupted one.
``torch.manual_seed`` also queues a lazy seed for each accelerator backend that is not initialized (CUDA, XPU, MTIA)
and formats the call stack every time; from inside a Lightning step that stack is deep. This benchmark fits the same
tiny model twice in one process, alternating the seeding function, and reports wall seconds per step and the ratio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_seeding.py [--steps 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform as std_platform
import random
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autolabel.engine import trainer as trainer_mod


def legacy_seed_all(seed: int) -> None:
    """The seeding before this change: torch.manual_seed (every backend, lazily) + numpy + random."""
    s = int(seed) % 2**63
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_seconds(steps: int, seeder: pl.Callback) -> float:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(steps, 8, generator=g), torch.randn(steps, 1, generator=g))
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[seeder])  # fmt: skip
    t = time.perf_counter()
    trainer.fit(Tiny(), DataLoader(data, batch_size=1))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_seeding.json"))
    a = ap.parse_args()
    new_seed_all = trainer_mod.seed_all
    times: dict[str, list[float]] = {"torch.manual_seed": [], "seed_all": []}
    for _ in range(a.rounds):  # alternate, so both see the same machine load
        for name, fn in (("torch.manual_seed", legacy_seed_all), ("seed_all", new_seed_all)):
            trainer_mod.seed_all = fn  # StepSeeder looks the function up at call time
            try:
                times[name].append(fit_seconds(a.steps, trainer_mod.StepSeeder(0)))
            finally:
                trainer_mod.seed_all = new_seed_all
    ms = {k: 1000 * min(v) / a.steps for k, v in times.items()}
    res = {"date": str(date.today()), "machine": f"{std_platform.machine()}, {torch.get_num_threads()} threads",
           "steps": a.steps, "rounds": a.rounds, "fit_seconds": times, "ms_per_step_best": ms,
           "ratio_legacy_over_new": ms["torch.manual_seed"] / ms["seed_all"]}  # fmt: skip
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: res[k] for k in ("ms_per_step_best", "ratio_legacy_over_new")}, indent=1))


if __name__ == "__main__":
    main()
