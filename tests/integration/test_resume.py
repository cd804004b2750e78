"""Kill a pipeline mid-stage, rerun the same command: the interrupted stage resumes from ``last.ckpt`` and the final
artifacts equal those of an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from autolabel.engine.io import read_json
from pipelines.cli import main

TINY = [
    "pipeline=hilander", "data.source=digits", "data.per_class=24", "classifier.max_epochs=2",
    "classifier.model.image_size=8", "classifier.model.width=8", "classifier.model.depth=1",
    "classifier.model.embed_dim=16", "hilander.max_epochs=60", "hilander.model.hidden=16",
    "hilander.train.k_list=[5,3]", "hilander.train.levels_list=[2,2]", "hilander.cluster.k=5",
    "hilander.baselines=[]", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "progress=false",
]  # fmt: skip


def _run_dir(root):
    (run,) = [p for p in (root / "hilander").iterdir() if p.is_dir()]
    return run


def _kill_when_checkpointed(args: list[str], root, stage: str, timeout: float = 300.0) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AUTOLABEL_RUN_DIR"}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            runs = list((root / "hilander").glob(f"*/{stage}/checkpoints/last.ckpt"))
            if runs:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                raise AssertionError(f"pipeline ended before `{stage}` checkpointed: {proc.stderr.read()[-2000:]!r}")
            time.sleep(0.02)
        raise AssertionError(f"no {stage} checkpoint within {timeout}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_killed_stage_resumes_to_the_uninterrupted_result(tmp_path):
    ref_root, root = tmp_path / "reference", tmp_path / "killed"
    assert main(["run", *TINY, f"run.root={ref_root}"]) == 0

    _kill_when_checkpointed(["run", *TINY, f"run.root={root}"], root, "hilander")
    run = _run_dir(root)
    assert not (run / "hilander" / "manifest.json").exists()  # killed mid-stage, not after it
    killed_at = torch.load(run / "hilander" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    assert killed_at < 59

    assert main(["run", *TINY, f"run.root={root}"]) == 0  # the same command: same run directory, resume
    assert _run_dir(root) == run
    stages = read_json(run / "summary.json")["stages"]
    assert stages["classifier"]["status"] == "skipped" and stages["hilander"]["status"] == "ran"

    ref = _run_dir(ref_root)
    assert (run / "cluster" / "clusters.csv").read_text() == (ref / "cluster" / "clusters.csv").read_text()
    a = torch.load(run / "hilander" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(ref / "hilander" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
