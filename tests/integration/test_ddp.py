"""A real 2-process DDP run (CPU, gloo) through a training stage, launched the way users launch it: the CLI
re-executed by Lightning's subprocess launcher; rank 1 must find rank 0's run directory."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from autolabel.data.synthetic import make_blob_features
from autolabel.engine.io import read_json


def test_fit_hilander_ddp_two_processes(tmp_path):
    x, y = make_blob_features(6, 20, 16, spread=0.1, seed=0)
    np.savez(tmp_path / "train.npz", features=x, labels=y)
    cmd = [sys.executable, "-m", "pipelines.cli", "fit", "hilander", f"train_features={tmp_path / 'train.npz'}",
           "model.hidden=16", "train.k_list=[5,3]", "train.levels_list=[2,2]", "trainer.max_epochs=2",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.enable_progress_bar=false",
           f"run.root={tmp_path / 'runs'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "AUTOLABEL_RUN_DIR"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = [p for p in (tmp_path / "runs" / "hilander").iterdir() if p.is_dir()]
    assert len(runs) == 1  # both ranks used rank 0's directory
    manifest = read_json(runs[0] / "hilander" / "manifest.json")
    assert manifest["status"] == "done"
    ckpt = __import__("torch").load(manifest["outputs"]["checkpoint"], weights_only=False)
    assert ckpt["hyper_parameters"]["kind"] == "hilander.lander"
    assert out.stdout.count("checkpoint:") == 1  # only rank 0 reports
