"""`autolabel sweep`: a 2-point grid over `fit hilander`, run by the local launcher, collected into one table."""

from __future__ import annotations

import csv

import numpy as np

from autolabel.data.synthetic import make_blob_features
from pipelines.cli import main


def test_grid_sweep_collects_results(tmp_path, capsys):
    x, y = make_blob_features(5, 16, 8, spread=0.1, seed=0)
    np.savez(tmp_path / "train.npz", features=x, labels=y)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"""
name: tiny
root: {tmp_path / "sweeps"}
command: fit hilander
base:
  - train_features={tmp_path / "train.npz"}
  - "train.k_list=[4]"
  - "train.levels_list=[1]"
  - trainer.max_epochs=2
  - trainer.accelerator=cpu
  - trainer.enable_progress_bar=false
grid:
  model.hidden: [8, 16]
metrics: [train/loss_epoch]
launcher: {{name: local}}
"""
    )
    assert main(["sweep", str(sweep)]) == 0
    rows = list(csv.DictReader((tmp_path / "sweeps" / "tiny" / "results.csv").open()))
    assert [r["model.hidden"] for r in rows] == ["8", "16"]
    assert all(r["returncode"] == "0" and float(r["train/loss_epoch"]) > 0 for r in rows)
    assert "sweep tiny" in capsys.readouterr().out
    # each job ran in its own pinned run directory
    assert (tmp_path / "sweeps" / "tiny" / "000" / "hilander" / "checkpoints" / "last.ckpt").is_file()
