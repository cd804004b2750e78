"""`autolabel sweep`: a 2-point grid over `fit hilander`, run by the local launcher, collected into one table."""

from __future__ import annotations

import csv

import numpy as np
import pytest

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


def test_gan_seed_sweep_ranks_whole_runs_by_the_synthetic_net_on_the_labeled_images(tmp_path):
    """configs/sweep/handsoff_gan_seeds.yaml on tiny settings: every seed runs the whole pipeline, and results.csv lists
    them best first by the synthetic-only net's score on the labeled images, beside the test scores."""
    from omegaconf import OmegaConf

    from autolabel.config import configs_dir
    from autolabel.engine.io import read_json
    from pipelines.definitions import TINY_OVERRIDES

    shipped = OmegaConf.load(configs_dir() / "sweep" / "handsoff_gan_seeds.yaml")
    assert shipped.rank_by == "miou_synthetic_on_labeled" and "finish" not in shipped  # whole runs: nothing to finish
    common = ["pipeline=handsoff", *TINY_OVERRIDES, "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
              "progress=false"]  # fmt: skip
    base = "[" + ",".join(f"'{a}'" for a in common) + "]"
    assert main(["sweep", str(configs_dir() / "sweep" / "handsoff_gan_seeds.yaml"), f"root={tmp_path}",
                 f"base={base}"]) == 0  # fmt: skip
    sweep_dir = tmp_path / "handsoff_gan_seeds"
    rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
    scores = [float(r["miou_synthetic_on_labeled"]) for r in rows]
    assert sorted(r["trainer.seed"] for r in rows) == ["0", "1"] and scores == sorted(scores, reverse=True)
    for r in rows:  # whole runs: the test scores are there too
        summary = read_json(sweep_dir / r["job"] / "summary.json")
        assert float(r["miou_synthetic"]) == pytest.approx(summary["miou_synthetic"]) and "miou_real_few" in summary
        assert summary["miou_synthetic_on_labeled"] == pytest.approx(float(r["miou_synthetic_on_labeled"]))


def test_sweep_finish_reruns_the_best_job_and_reports_a_failure(tmp_path):
    """finish without rank_by fails before any job runs; with it, the best job runs again in its own directory with
    the finish overrides (here: one more epoch, resumed), best.json records it, and a failed rerun makes the sweep
    exit 1."""
    from autolabel.engine.io import read_json
    from autolabel.errors import ConfigError
    from pipelines.sweep import run_sweep

    x, y = make_blob_features(5, 16, 8, spread=0.1, seed=0)
    np.savez(tmp_path / "train.npz", features=x, labels=y)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"""
name: s
root: {tmp_path / "sweeps"}
command: fit hilander
base: [train_features={tmp_path / "train.npz"}, "train.k_list=[4]", "train.levels_list=[1]", trainer.max_epochs=1,
       model.hidden=8, trainer.accelerator=cpu, trainer.enable_progress_bar=false]
grid: {{trainer.seed: [0]}}
metrics: [train/loss_epoch]
finish: [trainer.max_epochs=2]
""")
    with pytest.raises(ConfigError, match="rank_by"):
        run_sweep(sweep)
    assert not (tmp_path / "sweeps" / "s").exists()  # nothing ran
    assert main(["sweep", str(sweep), "rank_by=-train/loss_epoch"]) == 0
    sweep_dir = tmp_path / "sweeps" / "s"
    record = read_json(sweep_dir / "best.json")
    assert (record["job"], record["returncode"], record["params"]) == ("000", 0, {"trainer.seed": 0})
    log = list(csv.DictReader((sweep_dir / "000" / "hilander" / "logs" / "metrics.csv").open()))
    assert sorted({r["epoch"] for r in log if r.get("train/loss_epoch")}) == ["0", "1"]  # the second epoch ran
    assert (
        main(["sweep", str(sweep), "rank_by=-train/loss_epoch", f"finish=[train_features={tmp_path / 'no.npz'}]"]) == 1
    )
    assert read_json(sweep_dir / "best.json")["returncode"] != 0


def test_nothing_to_finish_when_no_job_reported_the_ranking_metric(tmp_path):
    from autolabel.engine.io import read_json
    from pipelines.sweep import SweepConfig, finish_best

    cfg = SweepConfig(rank_by="pairwise_f", finish=["x=1"])
    header = ["job", "pairwise_f", "status", "returncode", "seconds"]
    record = finish_best(cfg, tmp_path, [], header, [["000", None, "failed", 1, 0.5]], {})
    assert record["job"] is None and read_json(tmp_path / "best.json")["job"] is None
