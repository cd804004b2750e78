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


def _run_dir(root, pipeline: str = "hilander"):
    (run,) = [p for p in (root / pipeline).iterdir() if p.is_dir()]
    return run


def _kill_when_checkpointed(
    args: list[str], root, stage: str, timeout: float = 300.0, pipeline: str = "hilander"
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AUTOLABEL_RUN_DIR"}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # reduce floats in the same order as the in-process runs
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            runs = list((root / pipeline).glob(f"*/{stage}/checkpoints/last.ckpt"))
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


HANDSOFF = [
    "pipeline=handsoff", "until_stage=synthesis", "shapes.n_pool=32", "shapes.n_labeled=4", "shapes.n_test=4",
    "gan.kimg=0.128", "gan.model.z_dim=16", "gan.model.w_dim=16", "gan.model.channel_max=16", "gan.train.batch_size=4",
    "encoder.model.width=8", "encoder.model.max_width=16", "encoder.train.phase1_steps=3",
    "encoder.train.finetune_steps=2", "encoder.train.batch_size=4",
    "labels.model.n_members=2", "labels.model.hidden=[8,8]", "labels.model.min_class_pixels=1",
    "labels.train.max_steps=3", "labels.train.pixels_per_image=32", "labels.train.batch_pixels=32",
    "synthesis.n=4", "synthesis.drop_least_uncertain=1", "synthesis.batch_size=4",
    "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "progress=false",
]  # fmt: skip


def _weights_equal(a: dict, b: dict) -> list[str]:
    """Names of the tensors that differ (or exist on one side only)."""
    return sorted(k for k in set(a) | set(b) if k not in a or k not in b or not torch.equal(a[k], b[k]))


def test_handsoff_killed_during_gan_training_resumes_to_the_uninterrupted_result(tmp_path):
    """The default pipeline's first half, killed in the GAN stage once its last.ckpt exists: the rerun resumes the GAN
    (its optimizers, EMA and augmentation state) and every later artifact equals an uninterrupted run's."""
    ref_root, root = tmp_path / "reference", tmp_path / "killed"
    assert main(["run", *HANDSOFF, f"run.root={ref_root}"]) == 0
    ref = _run_dir(ref_root, "handsoff")

    _kill_when_checkpointed(["run", *HANDSOFF, f"run.root={root}"], root, "gan", pipeline="handsoff")
    run = _run_dir(root, "handsoff")
    assert not (run / "gan" / "manifest.json").exists()
    killed_at = torch.load(run / "gan" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    total = torch.load(ref / "gan" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    assert killed_at < total  # killed before the last epoch
    assert main(["run", *HANDSOFF, f"run.root={root}"]) == 0
    assert read_json(run / "summary.json")["stages"]["gan"]["status"] == "ran"

    differs = {}
    g_a, g_b = (torch.load(r / "gan" / "generator.pt", weights_only=False) for r in (run, ref))
    differs["generator.pt"] = _weights_equal(g_a.get("state_dict", g_a), g_b.get("state_dict", g_b))
    for stage in ("gan", "labels"):
        a, b = (
            torch.load(r / stage / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for r in (run, ref)
        )
        differs[f"{stage} last.ckpt"] = _weights_equal(a, b)
    assert differs == {k: [] for k in differs}, differs
    s_a, s_b = run / "synthesis" / "synthetic", ref / "synthesis" / "synthetic"
    assert (s_a / "manifest.jsonl").read_text() == (s_b / "manifest.jsonl").read_text()
    images = sorted(p.name for p in (s_b / "images").glob("*.png"))
    assert images and images == sorted(p.name for p in (s_a / "images").glob("*.png"))
    assert all((s_a / "images" / n).read_bytes() == (s_b / "images" / n).read_bytes() for n in images)
