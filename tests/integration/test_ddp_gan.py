"""A real 2-process DDP run (CPU, gloo) of GAN training through ``autolabel fit gan``: manual optimization with several
``manual_backward`` calls per step (D, lazy R1 with create_graph, G, lazy path length), requires_grad toggling, style
mixing and the ADA controller, whose counts must be summed over both ranks."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from autolabel.data.procedural import make_shapes_dataset
from autolabel.engine.io import read_json

N_IMAGES, BATCH = 16, 4


def test_fit_gan_ddp_two_processes(tmp_path):
    data = make_shapes_dataset(tmp_path / "shapes", N_IMAGES, size=16, seed=0)
    runs = tmp_path / "runs"
    # kimg = 2 epochs of 16 images; each rank gets 8 images per epoch = 2 steps of 4 -> 4 steps (one process: 8)
    cmd = [sys.executable, "-m", "pipelines.cli", "fit", "gan", f"images={data / 'images'}", "kimg=0.032",
           "gan.resolution=16", "gan.z_dim=16", "gan.w_dim=16", "gan.n_mapping=2", "gan.channel_base=64",
           "gan.channel_max=16", f"gan_train.batch_size={BATCH}", "gan_train.r1_interval=2", "gan_train.pl_weight=2",
           "gan_train.pl_interval=2", "gan_train.style_mixing_prob=1.0", "gan_train.ada_target=0.6",
           "gan_train.augment_p=0.5", "gan_train.ada_interval=1000", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
           f"run.root={runs}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "AUTOLABEL_RUN_DIR"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log  # two processes joined one process group

    run_dirs = [p for p in (runs / "gan").iterdir() if p.is_dir()]
    assert len(run_dirs) == 1  # rank 1 used rank 0's run directory
    manifest = read_json(run_dirs[0] / "gan" / "manifest.json")
    assert manifest["status"] == "done"

    ckpt = torch.load(manifest["outputs"]["checkpoint"], map_location="cpu", weights_only=False)
    sd = ckpt["state_dict"]
    steps = int(sd["n_iter"])
    assert steps == 2 * N_IMAGES // (2 * BATCH)  # the sampler sharded the data over 2 ranks
    # the ADA sums are all-reduced: every step adds both ranks' images (2 x BATCH), and no update happened yet
    assert int(sd["ada.steps"]) == steps and int(sd["ada.count"]) == steps * 2 * BATCH
    assert abs(int(sd["ada.sign_sum"])) <= int(sd["ada.count"]) and float(sd["ada.p"]) == 0.5
    assert float(sd["mean_path_length"]) > 0  # the path-length backward ran under DDP

    from autolabel.gan import load_generator

    gen = load_generator(manifest["outputs"]["generator"])
    from_ckpt = load_generator(manifest["outputs"]["checkpoint"])  # the Lightning checkpoint's g_ema loads as well
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = gen(z, noise_mode="const")
        assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
        assert torch.equal(img, from_ckpt(z, noise_mode="const"))
    assert torch.any(gen.w_avg != 0)  # tracked during the G steps (it starts at zero) and copied into g_ema


def test_fit_gan_ddp_with_two_starts(tmp_path):
    """Several GAN starts under DDP: both ranks train every start, agree on the one to keep and continue it."""
    data = make_shapes_dataset(tmp_path / "shapes", N_IMAGES, size=16, seed=0)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "pipelines.cli", "fit", "gan", f"images={data / 'images'}", "kimg=0.064",
           "gan.resolution=16", "gan.z_dim=16", "gan.w_dim=16", "gan.n_mapping=2", "gan.channel_base=64",
           "gan.channel_max=16", f"gan_train.batch_size={BATCH}", "gan_train.quality_every_kimg=0.016",
           "gan_train.quality_samples=4", "gan_train.random_backbone=true", "gan_train.candidates=2",
           "gan_train.candidate_kimg=0.032", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
           "trainer.enable_progress_bar=false", f"run.root={runs}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "AUTOLABEL_RUN_DIR"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = [p for p in (runs / "gan").iterdir() if p.is_dir()]
    manifest = read_json(run_dir / "gan" / "manifest.json")
    m = manifest["metrics"]
    kept = min((0, 1), key=lambda i: m[f"candidate{i}_best_fd_vgg"])
    assert m["candidate"] == kept and manifest["outputs"]["checkpoint"].endswith(
        f"candidates/{kept}/checkpoints/last.ckpt"
    )
    assert out.stdout.count(f"GAN: continuing start {kept + 1}") == 1  # rank 0 speaks
    for i in (0, 1):  # 16 images over 2 ranks, batch 4: 2 steps an epoch; 0.032 kimg = 2 epochs, 0.064 = 4
        sd = torch.load(run_dir / "gan" / "candidates" / str(i) / "checkpoints" / "last.ckpt", map_location="cpu",
                        weights_only=False)["state_dict"]  # fmt: skip
        assert int(sd["n_iter"]) == (8 if i == kept else 4)
