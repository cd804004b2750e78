"""GAN levers on the Weizmann horses at equal wall-clock: discriminator (StyleGAN2 vs projected on frozen VGG16) and
resolution (32 vs 64 px), with the offline quality metric (Fréchet distance on VGG16 features -- *not* Inception FID --
beside its real-vs-real reference) logged during training and sample grids saved at every evaluation.

One variant per process (so the variants can run side by side on the same machine, sharing it equally)::

    TORCH_HOME=... nice -n 10 .venv/bin/python benchmarks/gan_horses.py train --name proj64 --resolution 64 \\
        --discriminator projected --minutes 60 --work /tmp/gan_bench
    .venv/bin/python benchmarks/gan_horses.py collect --work /tmp/gan_bench --out benchmarks/results/gan_horses.json

``train`` trains on the photos of horses 1-200 (the same split as ``handsoff_horses.py``: 201-328 stay unseen) for
``--minutes`` of wall-clock (Lightning's ``max_time``), evaluating g_ema every ``--every-kimg``; ``collect`` gathers
each variant's ``quality/quality.json`` curve, throughput and best snapshot into one JSON and draws the curves and the
best grids into ``benchmarks/results/figures/``. The VGG16 weights come from ``autolabel weights lpips`` (torchvision's
cache file under ``$TORCH_HOME``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "weizmann_horse"


def prepare_photos(data: Path, out: Path, size: int) -> Path:
    """Photos of horses 1-200 at ``size`` px (``handsoff_horses.py``'s preprocessing), written once."""
    from handsoff_horses import N_TRAIN, _horse

    folder = out / f"photos_1_200_{size}"
    if folder.is_dir() and len(list(folder.glob("*.png"))) == N_TRAIN:
        return folder
    tmp = out / f".photos_{size}_{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(1, N_TRAIN + 1):
        _horse(data, i, size)[0].save(tmp / f"horse{i:03d}.png")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def train(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from autolabel.config import TrainerConfig
    from autolabel.config.gan import GANTrainConfig, GeneratorConfig
    from autolabel.data.images import ImageFolderDataset
    from autolabel.engine import fit
    from autolabel.gan.stylegan2_module import GANDataModule, GANModule

    work = Path(args.work)
    photos = prepare_photos(Path(args.data), work, args.resolution)
    run_dir = work / args.name
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    gcfg = GeneratorConfig(resolution=args.resolution, z_dim=args.z_dim, w_dim=args.z_dim, n_mapping=args.n_mapping,
                           channel_base=args.channel_base, channel_max=args.channel_max,
                           discriminator=args.discriminator, d_scales=args.d_scales,
                           d_head_channels=args.d_head_channels,
                           fused_modconv={"true": True, "false": False, "auto": None}[args.fused_modconv])  # fmt: skip
    tcfg = GANTrainConfig(lr=args.lr, batch_size=args.batch, r1_gamma=args.r1_gamma, quality_every_kimg=args.every_kimg,
                          quality_samples=args.quality_samples, ema_kimg=args.ema_kimg,
                          style_mixing_prob=args.style_mixing)  # fmt: skip
    ds = ImageFolderDataset(str(photos), size=args.resolution, channels=3, with_labels=False)
    dm = GANDataModule(size=args.resolution, batch_size=args.batch, dataset=ds)
    module = GANModule(gcfg, tcfg)
    tc = TrainerConfig(accelerator=args.accelerator, devices=1, max_epochs=100000, max_steps=-1, seed=args.seed,
                       precision=args.precision, enable_progress_bar=False, log_every_n_steps=20)  # fmt: skip
    t0 = time.perf_counter()
    max_time = dt.timedelta(minutes=args.minutes)
    trainer = fit(module, dm, tc, run_dir, max_time=max_time, tensorboard=False)
    wall = time.perf_counter() - t0
    images = int(module.n_iter) * args.batch
    info = {"name": args.name, "args": vars(args), "wall_s": wall, "steps": int(module.n_iter), "kimg": images / 1000,
            "kimg_per_hour": images / 1000 / (wall / 3600), "threads": torch.get_num_threads(),
            "g_params": sum(p.numel() for p in module.generator.parameters()),
            "d_trainable_params": sum(p.numel() for p in module.discriminator.parameters())}  # fmt: skip
    if trainer.is_global_zero:
        from torchvision.utils import save_image

        save_image(module.sample_grid(16, seed=0), run_dir / "best_samples.png")  # g_ema = best snapshot (keep_best)
        (run_dir / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))


def stopped_run_info(run_dir: Path) -> dict:
    """``info.json`` for a run stopped before its ``--minutes`` were up (killed: Lightning exits on an interrupt):
    kimg and steps from the last evaluation, wall time between the first and the last evaluation, and the best
    snapshot's sample grid drawn from ``checkpoints/best.ckpt`` (g_ema, the same fixed latents as a finished run)."""
    import torch
    from omegaconf import OmegaConf
    from torchvision.utils import make_grid, save_image

    from autolabel.gan.checkpoints import load_generator

    q = json.loads((run_dir / "quality" / "quality.json").read_text())
    grids = sorted(run_dir.glob("quality/samples_*.png"), key=lambda p: p.stat().st_mtime)
    wall = grids[-1].stat().st_mtime - grids[0].stat().st_mtime
    hp = OmegaConf.to_container(OmegaConf.load(run_dir / "logs" / "hparams.yaml"))
    g = load_generator(run_dir / "checkpoints" / "best.ckpt").eval()
    z = torch.randn(16, g.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = g(z, noise_mode="const").float()
    save_image(make_grid((img.clamp(-1, 1) + 1) / 2, nrow=4), run_dir / "best_samples.png")
    return {"name": run_dir.name, "args": hp, "wall_s": wall, "steps": q[-1]["step"], "kimg": q[-1]["kimg"],
            "kimg_per_hour": q[-1]["kimg"] / (wall / 3600), "stopped_early": True,
            "g_params": sum(p.numel() for p in g.parameters())}  # fmt: skip


def collect(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work = Path(args.work)
    out = Path(args.out)
    figs = out.parent / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    runs = {}
    for qpath in sorted(work.glob("*/quality/quality.json")):
        info_path = qpath.parent.parent / "info.json"
        if not info_path.is_file():
            info_path.write_text(json.dumps(stopped_run_info(info_path.parent), indent=1))
        info = json.loads(info_path.read_text())
        q = json.loads((info_path.parent / "quality" / "quality.json").read_text())
        best = min(q, key=lambda r: r["fd_vgg"])
        info.update(curve=q, best=best, first=q[0], last=q[-1])
        runs[info["name"]] = info
        shutil.copy(info_path.parent / "best_samples.png", figs / f"gan_horses_{info['name']}_best.png")
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
           "note": "Frechet distance / KID on VGG16 relu5_3 features (not Inception FID), g_ema vs real half A; "
                   "fd_vgg_real = real half B vs A, same sample size", "runs": runs}  # fmt: skip
    out.write_text(json.dumps(res, indent=1))
    fig, ax = plt.subplots(1, 1, figsize=(6, 4))
    for name, r in runs.items():
        ax.plot([c["kimg"] for c in r["curve"]], [c["fd_vgg"] for c in r["curve"]], label=name)
        ax.axhline(r["first"]["fd_vgg_real"], ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_xlabel("kimg")
    ax.set_ylabel("FD on VGG16 features (dotted: real vs real)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(figs / f"{out.stem}_fd_curves.png", dpi=100)
    for name, r in runs.items():
        print(
            f"| {name} | {r['kimg']:.1f} | {r['kimg_per_hour']:.1f} | {r['first']['fd_vgg']:.1f} | "
            f"{r['best']['fd_vgg']:.1f} @ {r['best']['kimg']:.1f} | {r['last']['fd_vgg']:.1f} | "
            f"{r['first']['fd_vgg_real']:.1f} | {r['best']['kid_vgg']:.4f} | {r['first']['kid_vgg_real']:.4f} |"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--name", required=True)
    t.add_argument("--data", default=str(DEFAULT_DATA))
    t.add_argument("--work", default="/tmp/gan_bench")
    t.add_argument("--resolution", type=int, default=64)
    t.add_argument("--discriminator", default="projected", choices=["stylegan2", "projected"])
    t.add_argument("--d-scales", type=int, default=4)
    t.add_argument("--d-head-channels", type=int, default=64)
    t.add_argument("--r1-gamma", type=float, default=None, help="None: heuristic (StyleGAN2 D) / 0 (projected D)")
    t.add_argument("--minutes", type=float, default=60.0)
    t.add_argument("--every-kimg", type=float, default=1.0)
    t.add_argument("--quality-samples", type=int, default=100)
    t.add_argument("--channel-max", type=int, default=128)
    t.add_argument("--channel-base", type=int, default=4096)
    t.add_argument("--fused-modconv", default="false", choices=["true", "false", "auto"])
    t.add_argument("--z-dim", type=int, default=128)
    t.add_argument("--n-mapping", type=int, default=4)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=0.002)
    t.add_argument("--ema-kimg", type=float, default=1.0)
    t.add_argument("--style-mixing", type=float, default=0.0)
    t.add_argument("--precision", default="32-true")
    t.add_argument("--accelerator", default="cpu")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true")
    c = sub.add_parser("collect")
    c.add_argument("--work", default="/tmp/gan_bench")
    c.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gan_horses.json"))
    args = ap.parse_args(argv)
    train(args) if args.cmd == "train" else collect(args)


if __name__ == "__main__":
    main()
