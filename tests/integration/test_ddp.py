"""Real 2-process DDP runs (CPU, gloo), launched the way users launch them: the CLI re-executed by Lightning's
subprocess launcher; rank 1 must find rank 0's run directory.

- ``fit classifier config=configs/trainer/gpu8_ddp.yaml``: the shipped multi-GPU trainer file with only the hardware
  swapped (accelerator=cpu, devices=2): its strategy (ddp) and precision (bf16-mixed) are the ones that run.
- ``run pipeline=hilander`` with trainer.devices=2: rank 1 re-runs the pipeline, trains the training stages along with
  rank 0 and waits while rank 0 alone prepares data, embeds and clusters into the shared folders.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import torch

from autolabel.config import configs_dir
from autolabel.data.procedural import make_shapes_dataset
from autolabel.engine.io import read_json


def _run(args: list[str], verbose: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOLABEL_")}
    env["OMP_NUM_THREADS"] = "1"
    if verbose:  # keep Lightning's banners (the precision line is the evidence below)
        env["AUTOLABEL_VERBOSE"] = "1"
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=600,
                         env=env)  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out


def test_fit_classifier_ddp_two_processes_with_the_gpu8_trainer_file(tmp_path):
    """The shipped trainer/gpu8_ddp.yaml, only the hardware swapped: strategy=ddp and precision=bf16-mixed run as is.
    (fit classifier: Hi-LANDER's sparse message passing has no bf16 kernel on CPU.)"""
    data = make_shapes_dataset(tmp_path / "shapes", 24, size=8, n_classes_shapes=2, n_colors=2, seed=0)
    out = _run(["fit", "classifier", f"config={configs_dir() / 'trainer' / 'gpu8_ddp.yaml'}",
                f"train_dir={data / 'unlabeled'}", "classifier.image_size=8", "classifier.width=8",
                "classifier.depth=1", "classifier.embed_dim=16", "classifier.batch_size=4", "trainer.max_epochs=2",
                "trainer.accelerator=cpu", "trainer.devices=2", "trainer.enable_progress_bar=false",
                f"run.root={tmp_path / 'runs'}"], verbose=True)  # fmt: skip
    log = out.stdout + out.stderr
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log  # really two processes in one process group
    assert "bfloat16" in log  # the file's precision=bf16-mixed ran (CPU autocast), not 32-true
    runs = [p for p in (tmp_path / "runs" / "classifier").iterdir() if p.is_dir()]
    assert len(runs) == 1  # both ranks used rank 0's directory
    manifest = read_json(runs[0] / "classifier" / "manifest.json")
    assert manifest["status"] == "done" and len(manifest["classes"]) == 4
    ckpt = torch.load(manifest["outputs"]["checkpoint"], weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * 2  # 2 epochs of 2 steps: each rank sees half the batches
    assert out.stdout.count("checkpoint:") == 1  # only rank 0 reports


def test_hilander_pipeline_on_two_ranks(tmp_path):
    runs = tmp_path / "runs"
    out = _run(["run", "pipeline=hilander", "data.source=digits", "data.per_class=16", "classifier.max_epochs=1",
                "classifier.model.image_size=8", "classifier.model.width=8", "classifier.model.depth=1",
                "classifier.model.embed_dim=16", "classifier.model.batch_size=8", "hilander.max_epochs=2", "hilander.model.hidden=16",
                "hilander.train.k_list=[4]", "hilander.train.levels_list=[2]", "hilander.cluster.k=4",
                "hilander.baselines=[kmeans]", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                "trainer.enable_progress_bar=false", "progress=false", f"run.root={runs}"])  # fmt: skip
    log = out.stdout + out.stderr
    assert "MEMBER: 2/2" in log  # rank 1 existed and trained
    for stage in ("embed", "cluster"):  # rank 1 left these to rank 0 instead of writing the same files itself
        assert f"[{stage}] rank 1: runs on rank 0, waiting for its manifest" in log, stage
    assert "[hilander] rank 1: training along with rank 0" in log
    (run,) = [p for p in (runs / "hilander").iterdir() if p.is_dir()]
    for stage in ("data", "classifier", "embed", "hilander", "cluster"):
        assert read_json(run / stage / "manifest.json")["status"] == "done", stage
    assert len(list(csv.DictReader((run / "cluster" / "clusters.csv").open()))) == 5 * 16
    assert 0.0 <= read_json(run / "summary.json")["nmi"] <= 1.0
    assert out.stdout.count("report:") == 1  # one summary and one report, by rank 0
