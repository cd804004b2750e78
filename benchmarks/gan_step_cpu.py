"""Throughput of one GAN training step on the CPU: variants side by side, interleaved in rounds (so a shared, noisy
machine slows them alike), reported as kimg/hour and as a ratio to the baseline; plus a torch.profiler table of the
baseline step's most expensive operators.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/gan_step_cpu.py --resolution 32 --channel-max 64 \\
        --rounds 3 --steps 4 --out benchmarks/results/gan_step_cpu.json

Variants: ``grouped`` (baseline: the modulated convs as one grouped conv per layer), ``unfused`` (the same map as one
batched conv with activation scaling, :meth:`ModulatedConv2d._forward_unfused`), ``channels_last`` (NHWC memory
format for G, D and the images), ``bf16`` (``bf16-mixed`` autocast), ``batch32`` (twice the batch), each for the StyleGAN2
discriminator and (``--projected``) for the projected one. Weights of the projected D's backbone are random here
(throughput only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset

from autolabel.gan.stylegan2_module import GANDataModule, GANModule


class _Clock(pl.Callback):
    def __init__(self):
        self.t: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.t.append(time.perf_counter())


def _module(args, disc: str, variant: str) -> tuple[GANModule, int]:
    batch = args.batch * (2 if variant == "batch32" else 1)
    gen = dict(resolution=args.resolution, z_dim=128, w_dim=128, n_mapping=4, channel_base=4096,
               channel_max=args.channel_max, discriminator=disc)  # fmt: skip
    torch.manual_seed(0)
    m = GANModule(gen, dict(batch_size=batch, style_mixing_prob=0.0, random_backbone=True, r1_interval=4))
    for mod in m.modules():
        if hasattr(mod, "fused"):
            mod.fused = variant != "unfused"
    if variant == "channels_last":
        for t in [*m.parameters(), *m.buffers()]:
            if t.ndim == 4:  # 4-D weights only (the modulated convs' weights are 5-D)
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return m, batch


def seconds_per_step(args, disc: str, variant: str) -> float:
    m, batch = _module(args, disc, variant)
    x = torch.rand(batch * (args.steps + 1), 3, args.resolution, args.resolution) * 2 - 1
    if variant == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    clock = _Clock()
    pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=args.steps + 1, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
               precision="bf16-mixed" if variant == "bf16" else "32-true").fit(
        m, datamodule=GANDataModule(dataset=TensorDataset(x), batch_size=batch))  # fmt: skip
    return (clock.t[-1] - clock.t[0]) / args.steps / batch  # seconds per image (first step excluded: warm-up)


def profile(args, disc: str) -> list[dict]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    m, batch = _module(args, disc, "grouped")
    x = torch.rand(batch * 2, 3, args.resolution, args.resolution) * 2 - 1
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.fit(m, datamodule=GANDataModule(dataset=TensorDataset(x), batch_size=batch))
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return [{"op": e.key, "self_cpu_share": e.self_cpu_time_total / total, "calls": e.count} for e in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channel-max", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--projected", action="store_true")
    ap.add_argument("--variants", default="grouped,unfused,channels_last,bf16,batch32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    discs = ["stylegan2"] + (["projected"] if args.projected else [])
    variants = args.variants.split(",")
    times: dict[str, dict[str, list[float]]] = {d: {v: [] for v in variants} for d in discs}
    for r in range(args.rounds):
        for d in discs:
            for v in variants:
                times[d][v].append(seconds_per_step(args, d, v))
                print(f"round {r} {d} {v}: {3.6 / times[d][v][-1]:.2f} kimg/h", flush=True)
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
           "threads": torch.get_num_threads(), "args": vars(args), "results": {}}  # fmt: skip
    for d in discs:
        base = sorted(times[d][variants[0]])[len(times[d][variants[0]]) // 2]
        for v in variants:
            med = sorted(times[d][v])[len(times[d][v]) // 2]
            res["results"][f"{d}/{v}"] = {"kimg_per_hour": 3.6 / med, "speedup_vs_" + variants[0]: base / med,
                                          "seconds_per_image_rounds": times[d][v]}  # fmt: skip
            print(f"| {d} | {v} | {3.6 / med:.2f} | {base / med:.2f} |")
    res["profile_" + discs[0]] = profile(args, discs[0])
    for row in res["profile_" + discs[0]]:
        print(f"{row['op']:40s} {row['self_cpu_share']:.3f} {row['calls']}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
