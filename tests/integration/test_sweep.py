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


def _optuna_sweep(tmp_path, optuna_block: str):
    x, y = make_blob_features(5, 16, 8, spread=0.1, seed=0)
    np.savez(tmp_path / "train.npz", features=x, labels=y)
    sweep = tmp_path / "optuna.yaml"
    sweep.write_text(
        f"""
name: study
root: {tmp_path / "sweeps"}
command: fit hilander
base:
  - train_features={tmp_path / "train.npz"}
  - "train.k_list=[4]"
  - "train.levels_list=[1]"
  - model.hidden=8
  - trainer.accelerator=cpu
  - trainer.enable_progress_bar=false
metrics: [train/loss_epoch]
launcher: {{name: local}}
optuna:
{optuna_block}
"""
    )
    assert main(["sweep", str(sweep)]) == 0
    return list(csv.DictReader((tmp_path / "sweeps" / "study" / "results.csv").open()))


def test_optuna_study_runs_trials_and_collects_them(tmp_path):
    rows = _optuna_sweep(
        tmp_path,
        """  n_trials: 2
  direction: minimize
  metric: train/loss_epoch
  params: {train.lr: {low: 0.001, high: 0.1, log: true}, trainer.max_epochs: {low: 1, high: 2}}""",
    )
    assert len(rows) == 2 and all(r["status"] == "done" and float(r["train/loss_epoch"]) > 0 for r in rows)
    assert all(0.001 <= float(r["train.lr"]) <= 0.1 and r["trainer.max_epochs"] in ("1", "2") for r in rows)


def test_optuna_pruner_stops_a_running_trial(tmp_path):
    # every reported loss is above the threshold: each trial is stopped as soon as its curve shows up, long before
    # its 2000 epochs end
    rows = _optuna_sweep(
        tmp_path,
        """  n_trials: 1
  direction: minimize
  metric: train/loss_epoch
  params: {train.lr: {choices: [0.01]}, trainer.max_epochs: {choices: [2000]}}
  prune_metric: train/loss_step
  pruner: threshold
  prune_upper: -1.0
  prune_interval_s: 0.2""",
    )
    assert [r["status"] for r in rows] == ["pruned"]
    assert rows[0]["train/loss_epoch"] == ""  # it never finished, so it wrote no summary


def test_gan_seed_sweep_ranks_by_the_labels_held_out_score_and_the_best_run_finishes(tmp_path):
    """configs/sweep/handsoff_gan_seeds.yaml on tiny settings: each seed runs up to the label generator, results.csv
    ranks the seeds by its held-out score, and the best job's run finishes without training its GAN again."""
    from omegaconf import OmegaConf

    from autolabel.config import configs_dir
    from autolabel.engine.io import read_json
    from pipelines.definitions import TINY_OVERRIDES

    shipped = OmegaConf.load(configs_dir() / "sweep" / "handsoff_gan_seeds.yaml")
    assert shipped.rank_by == "length_heldout_score" and "until_stage=labels" in shipped.base
    common = ["pipeline=handsoff", *TINY_OVERRIDES, "labels.train.select_folds=2", "labels.train.select_every=1",
              "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "progress=false"]  # fmt: skip
    base = "[" + ",".join(f"'{a}'" for a in [*common, "until_stage=labels"]) + "]"
    assert main(["sweep", str(configs_dir() / "sweep" / "handsoff_gan_seeds.yaml"), f"root={tmp_path}",
                 f"base={base}"]) == 0  # fmt: skip
    sweep_dir = tmp_path / "handsoff_gan_seeds"
    rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
    scores = [float(r["length_heldout_score"]) for r in rows]
    assert sorted(r["trainer.seed"] for r in rows) == ["0", "1"] and scores == sorted(scores, reverse=True)
    best = rows[0]
    run = sweep_dir / best["job"]
    assert not (run / "synthesis").exists()  # stopped after the label generator
    gan_mtime = (run / "gan" / "generator.pt").stat().st_mtime_ns
    assert main(["run", *common, f"trainer.seed={best['trainer.seed']}", f"run.dir={run}"]) == 0
    assert (run / "gan" / "generator.pt").stat().st_mtime_ns == gan_mtime  # reused, not retrained
    assert "miou_synthetic" in read_json(run / "summary.json")
