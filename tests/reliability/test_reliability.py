"""Bad inputs and faults, as a new user meets them (issue 10): untrusted checkpoints, outputs that would destroy an
input, silent wrong inputs, concurrent runs, full/read-only disks, config and YAML mistakes, duplicates in a pool.

Every CLI case runs ``pipelines.cli.main`` in-process and asserts the exit code and the one-line message (never a
traceback); the rest assert on results (16-bit images, file modes, clustering of duplicates). Data is generated here,
tiny: the module runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autolabel.data.synthetic import make_blob_features
from pipelines.cli import main

# ------------------------------------------------------------------------------------------------ helpers


class _Payload:
    """A pickle that runs code when loaded: it creates ``marker``. Nothing may ever create it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _cli(args: list, capsys) -> tuple[int, str]:
    """Run the CLI in-process; return its exit code and its one ``error:`` line (asserting there is no traceback)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) <= 1, err
    return rc, lines[0] if lines else ""


def _with_payload(src: Path, dst: Path, marker: Path) -> Path:
    """``src`` (a real checkpoint, read safely) with a code-running object added, saved as ``dst``."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["callbacks_extra"] = _Payload(marker)
    torch.save(ckpt, dst)
    return dst


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` (a decompression bomb as far as any reader can tell)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


# ------------------------------------------------------------------------------------------------ the world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every file the cases need: feature pools, a real Hi-LANDER checkpoint, a feature-encoder checkpoint, a tiny
    generator, labeled and image folders, payload and damaged variants of each checkpoint."""
    from autolabel.config.classifier import ClassifierConfig
    from autolabel.data.labeled import write_labeled_folder
    from autolabel.gan import save_generator
    from autolabel.gan.stylegan2 import Generator
    from autolabel.tasks.classifier_module import ClassifierModule

    root = tmp_path_factory.mktemp("world")
    w: dict = {"root": root, "marker": root / "PAYLOAD_RAN"}
    x, y = make_blob_features(4, 10, 8, spread=0.1, seed=0)
    np.savez(root / "train.npz", features=x, labels=y)
    np.savez(root / "pool.npz", features=x, labels=y)
    np.savez(root / "one_class.npz", features=x[:10], labels=np.zeros(10, np.int64))
    np.savez(root / "two.npz", features=x[[0, 15]], labels=np.array([0, 1]))
    w["fit"] = ["fit", "hilander", f"train_features={root / 'train.npz'}", "model.hidden=8", "train.k_list=[3]",
                "train.levels_list=[1]", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false", f"run.root={root / 'runs'}"]  # fmt: skip
    assert main(w["fit"]) == 0
    (lander,) = (root / "runs" / "hilander").glob("*/hilander/checkpoints/last.ckpt")
    w["lander"] = lander
    w["lander_payload"] = _with_payload(lander, root / "lander_payload.ckpt", w["marker"])
    torch.save({"hyper_parameters": {"x": _Payload(w["marker"])}}, root / "bare_payload.ckpt")
    w["bare_payload"] = root / "bare_payload.ckpt"

    torch.manual_seed(0)
    module = ClassifierModule(ClassifierConfig(image_size=8, width=4, depth=1, embed_dim=4), n_classes=2)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, root / "enc.ckpt")
    w["classifier"] = root / "enc.ckpt"
    w["classifier_payload"] = _with_payload(root / "enc.ckpt", root / "enc_payload.ckpt", w["marker"])

    gen = Generator(8, z_dim=8, w_dim=8, n_mapping=1, channel_base=32, channel_max=16).eval()
    w["generator"] = save_generator(gen, root / "generator.pt")
    w["generator_payload"] = _with_payload(w["generator"], root / "generator_payload.pt", w["marker"])
    torch.save({"state_dict": {}, "hyper_parameters": {"task": "segmentation", "x": _Payload(w["marker"])}},
               root / "labels_payload.ckpt")  # fmt: skip
    w["labels_payload"] = root / "labels_payload.ckpt"
    w["encoder_payload"] = w["labels_payload"]

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "images" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "images" / cls / f"{i}.png")
    w["images"] = root / "images"
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[:, 2:6, 2:6] = 1
    w["labeled"] = write_labeled_folder(root / "labeled", rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8),
                                        "segmentation", masks)  # fmt: skip

    data = lander.read_bytes()
    (root / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (root / "random.ckpt").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "empty.ckpt").write_bytes(b"")
    (root / "dir.ckpt").mkdir()
    yield w
    assert not w["marker"].exists(), "a checkpoint payload ran"


# ------------------------------------------------------------------------------------------------ checkpoints


def _payload_cases(w: dict, tmp: Path) -> dict[str, list]:
    r = w["root"]
    return {
        "cluster_real_checkpoint_with_payload": ["cluster", f"checkpoint={w['lander_payload']}",
                                                 f"features={r / 'pool.npz'}", f"out={tmp / 'c.csv'}"],
        "cluster_bare_payload": ["cluster", f"checkpoint={w['bare_payload']}", f"features={r / 'pool.npz'}",
                                 f"out={tmp / 'c.csv'}"],
        "embed_real_checkpoint_with_payload": ["embed", f"checkpoint={w['classifier_payload']}",
                                               f"images={w['images']}", f"out={tmp / 'p.npz'}"],
        "synthesize_label_checkpoint": ["synthesize", f"checkpoint={w['labels_payload']}", f"out={tmp / 'syn'}",
                                        "n=2"],
        "fit_encoder_generator": ["fit", "encoder", f"generator={w['generator_payload']}", f"images={w['images']}",
                                  f"run.root={tmp / 'runs'}"],
        "fit_labels_generator": ["fit", "labels", f"generator={w['generator_payload']}",
                                 f"encoder={w['encoder_payload']}", f"labeled={w['labeled']}",
                                 f"run.root={tmp / 'runs'}"],
        "fit_labels_encoder": ["fit", "labels", f"generator={w['generator']}", f"encoder={w['encoder_payload']}",
                               f"labeled={w['labeled']}", "label_generator.n_members=1",
                               f"run.root={tmp / 'runs'}"],
        "weights_gan_src": ["weights", "gan", f"src={w['generator_payload']}", f"out={tmp / 'g.pt'}"],
    }  # fmt: skip


PAYLOAD_CASES = ["cluster_real_checkpoint_with_payload", "cluster_bare_payload", "embed_real_checkpoint_with_payload",
                 "synthesize_label_checkpoint", "fit_encoder_generator", "fit_labels_generator", "fit_labels_encoder",
                 "weights_gan_src"]  # fmt: skip


@pytest.mark.parametrize("case", PAYLOAD_CASES)
def test_payload_checkpoint_is_refused_and_nothing_runs(world, case, tmp_path, capsys):
    args = _payload_cases(world, tmp_path)[case]
    rc, err = _cli(args, capsys)
    assert rc == 2 and "was refused" in err and "nothing from it was run" in err, err
    assert "weights_only=False" not in err
    assert not world["marker"].exists()


def test_payload_in_last_ckpt_is_refused_on_resume(world, tmp_path, capsys):
    """A stage resuming from a ``last.ckpt`` someone replaced: Lightning's resume goes through the same loader."""
    run = world["lander"].parents[2]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    last = copy / "hilander" / "checkpoints" / "last.ckpt"
    _with_payload(world["lander"], last, world["marker"])
    (copy / "hilander" / "manifest.json").unlink()  # the stage looks interrupted: the rerun resumes from last.ckpt
    rc, err = _cli([*world["fit"], f"run.resume={copy}"], capsys)
    assert rc == 2 and "checkpoint to resume from" in err and str(last) in err and "was refused" in err, err
    assert not world["marker"].exists()


def test_lpips_weights_payload_is_refused(world):
    from autolabel.errors import CheckpointError
    from autolabel.handsoff.lpips_weights import build_lpips

    with pytest.raises(CheckpointError, match="LPIPS weights .*was refused") as e:
        build_lpips("alex", weights=world["bare_payload"])
    assert "\n" not in str(e.value) and not world["marker"].exists()


BAD_FILES = {"truncated.ckpt": "not a readable torch checkpoint", "random.ckpt": "not a readable torch checkpoint",
             "empty.ckpt": "is empty (0 bytes)", "dir.ckpt": "is a directory"}  # fmt: skip


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
@pytest.mark.parametrize("command", ["cluster", "embed", "synthesize", "weights gan", "fit encoder", "fit labels"])
def test_bad_checkpoint_file_is_one_line(world, command, bad, tmp_path, capsys):
    r, f = world["root"], world["root"] / bad
    args = {
        "cluster": ["cluster", f"checkpoint={f}", f"features={r / 'pool.npz'}", f"out={tmp_path / 'c.csv'}"],
        "embed": ["embed", f"checkpoint={f}", f"images={world['images']}", f"out={tmp_path / 'p.npz'}"],
        "synthesize": ["synthesize", f"checkpoint={f}", f"out={tmp_path / 'syn'}", "n=2"],
        "weights gan": ["weights", "gan", f"src={f}", f"out={tmp_path / 'g.pt'}"],
        "fit encoder": ["fit", "encoder", f"generator={f}", f"images={world['images']}", f"run.root={tmp_path}"],
        "fit labels": ["fit", "labels", f"generator={world['generator']}", f"encoder={f}",
                       f"labeled={world['labeled']}", "label_generator.n_members=1", f"run.root={tmp_path}"],
    }[command]  # fmt: skip
    rc, err = _cli(args, capsys)
    assert rc == 2 and BAD_FILES[bad] in err and str(f) in err, err


# ------------------------------------------------------------------------------------------------ outputs


def _out_cases(w: dict, tmp: Path) -> dict[str, tuple[list, str]]:
    r = w["root"]
    (tmp / "a_dir").mkdir()
    (tmp / "a_file.txt").write_text("x")
    cluster = ["cluster", f"checkpoint={w['lander']}", f"features={r / 'pool.npz'}"]
    first_image = sorted(w["images"].rglob("*.png"))[0]
    return {
        "cluster_out_is_features": ([*cluster, f"out={r / 'pool.npz'}"], "is the input features="),
        "cluster_out_is_checkpoint": ([*cluster, f"out={w['lander']}"], "is the input checkpoint="),
        "cluster_out_is_directory": ([*cluster, f"out={tmp / 'a_dir'}"], "is a directory: give a file path"),
        "cluster_metrics_out_is_features": ([*cluster, f"out={tmp / 'c.csv'}", f"metrics_out={r / 'pool.npz'}"],
                                            "metrics_out="),
        "cluster_out_on_unwritable_disk": ([*cluster, "out=/sys/autolabel_clusters.csv"], "cannot write to /sys"),
        "embed_out_is_an_input_image": (["embed", f"checkpoint={w['classifier']}", f"images={w['images']}",
                                         f"out={first_image}"], "lies inside the input images="),
        "synthesize_into_real_dataset": (["synthesize", f"checkpoint={w['lander']}", f"out={w['labeled']}", "n=2"],
                                         "is a non-empty folder (images, masks) that is not an earlier"),
        "synthesize_out_is_a_file": (["synthesize", f"checkpoint={w['lander']}", f"out={tmp / 'a_file.txt'}", "n=2"],
                                     "is a file: give a folder"),
        "fit_run_root_unwritable": ([*w["fit"], "run.root=/sys/autolabel_runs"], "cannot write to /sys"),
        "weights_gan_out_is_src": (["weights", "gan", f"src={w['generator']}", f"out={w['generator']}"],
                                   "is the input src="),
    }  # fmt: skip


OUT_CASES = ["cluster_out_is_features", "cluster_out_is_checkpoint", "cluster_out_is_directory",
             "cluster_metrics_out_is_features", "cluster_out_on_unwritable_disk", "embed_out_is_an_input_image",
             "synthesize_into_real_dataset", "synthesize_out_is_a_file", "fit_run_root_unwritable",
             "weights_gan_out_is_src"]  # fmt: skip


@pytest.mark.parametrize("case", OUT_CASES)
def test_outputs_never_overwrite_inputs(world, case, tmp_path, capsys):
    args, message = _out_cases(world, tmp_path)[case]
    before = {p: p.read_bytes() for p in [world["root"] / "pool.npz", world["lander"], world["generator"]]}
    images_before = sorted(p.name for p in (world["labeled"] / "images").iterdir())
    rc, err = _cli(args, capsys)
    assert rc == 2 and message in err, err
    assert all(p.read_bytes() == b for p, b in before.items())
    assert sorted(p.name for p in (world["labeled"] / "images").iterdir()) == images_before


def test_full_disk_is_found_before_any_work(world, tmp_path, capsys, monkeypatch):
    import autolabel.engine.paths as paths

    monkeypatch.setattr(paths.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30, 2**20))
    rc, err = _cli(["cluster", f"checkpoint={world['lander']}", f"features={world['root'] / 'pool.npz'}",
                    f"out={tmp_path / 'c.csv'}"], capsys)  # fmt: skip
    assert rc == 2 and "has only 1.0 MiB free" in err and "before any work" in err, err


def test_disk_full_mid_write_is_one_line(world, tmp_path, capsys, monkeypatch):
    import autolabel.hilander.clustering as clustering

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(clustering, "write_clusters_csv", full)
    rc, err = _cli(["cluster", f"checkpoint={world['lander']}", f"features={world['root'] / 'pool.npz'}",
                    f"out={tmp_path / 'c.csv'}"], capsys)  # fmt: skip
    assert rc == 2 and "no space left on the device" in err and "c.csv" in err, err


def test_synthesize_accepts_its_own_earlier_output(tmp_path):
    from autolabel.engine.paths import check_output_dir

    out = tmp_path / "syn"
    out.mkdir()
    (out / "plan.json").write_text("{}")
    (out / "images").mkdir()
    assert check_output_dir(out, {}, marker="plan.json", command="autolabel synthesize") == out.resolve()
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", {}, marker="plan.json", command="x") == (tmp_path / "empty").resolve()


# ------------------------------------------------------------------------------------------------ config and YAML


def _config_cases(w: dict, tmp: Path) -> dict[str, tuple[list, str]]:
    r = w["root"]
    (tmp / "tab.yaml").write_text("model:\n\thidden: 8\n")
    (tmp / "syntax.yaml").write_text("train:\n  k_list: [3, 2\n  lr: 0.1\n")
    fit = [a for a in w["fit"] if not a.startswith("train_features=")]
    return {
        "negative_max_epochs": ([*w["fit"], "trainer.max_epochs=-5"], "trainer.max_epochs=-5 would train nothing"),
        "negative_max_steps": ([*w["fit"], "trainer.max_steps=-3"], "trainer.max_steps=-3"),
        "zero_k": (["cluster", f"checkpoint={w['lander']}", f"features={r / 'pool.npz'}", "cluster.k=0"],
                   "cluster.k=0"),
        "negative_kimg": (["fit", "gan", f"images={w['images']}", "kimg=-1", "--config"], "kimg=-1"),
        "negative_per_class": (["run", "pipeline=hilander", "data.per_class=-5", "--config"], "per_class=-5"),
        "yaml_tab": ([*w["fit"], f"config={tmp / 'tab.yaml'}"], "at line 2, column 1"),
        "yaml_syntax": ([*w["fit"], f"config={tmp / 'syntax.yaml'}"], "at line 3, column"),
        "hilander_single_class": ([*fit, f"train_features={r / 'one_class.npz'}"], "has 1 class(es) in 10 samples"),
        "hilander_n2_k3": ([*fit, f"train_features={r / 'two.npz'}"], "k=3 but the training pool has only 2"),
    }  # fmt: skip


CONFIG_CASES = ["negative_max_epochs", "negative_max_steps", "zero_k", "negative_kimg", "negative_per_class",
                "yaml_tab", "yaml_syntax", "hilander_single_class", "hilander_n2_k3"]  # fmt: skip


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_mistakes_fail_before_work_in_one_line(world, case, tmp_path, capsys):
    args, message = _config_cases(world, tmp_path)[case]
    rc, err = _cli(args, capsys)
    assert rc == 2 and message in err, err
    if case == "yaml_tab":
        assert "never tabs" in err


# ------------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16", [0, 257, 32896, 65535], [0, 1, 128, 255]),
        ("I", [0, 257, 32896, 65535], [0, 1, 128, 255]),
        ("I", [0, 7, 128, 255], [0, 7, 128, 255]),  # 8-bit data in a 32-bit image stays as is
        ("F", [0.0, 0.5, 1.0, 0.25], [0, 128, 255, 64]),
        ("F", [0.0, 10.0, 200.0, 255.0], [0, 10, 200, 255]),
    ],
)
def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path, mode, values, expected):
    from autolabel.data.images import image_array, load_image

    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    arr = np.array(values, dtype=dtype).reshape(2, 2)
    im = Image.fromarray(arr, mode=mode) if mode != "I;16" else Image.fromarray(arr)
    assert im.mode == mode
    got = image_array(im, 3)
    assert got.dtype == np.uint8 and got.shape == (2, 2, 3)
    assert got[..., 0].ravel().tolist() == expected and (got[..., 0] == got[..., 2]).all()
    if mode in ("I;16", "I") and max(values) > 255:  # through a real 16-bit PNG file: no longer solid white
        Image.fromarray(arr.astype(np.uint16)).save(tmp_path / "x16.png")
        assert load_image(tmp_path / "x16.png", channels=1)[..., 0].ravel().tolist() == expected


def test_16bit_png_photo_is_not_white(tmp_path):
    from autolabel.data.images import load_image

    ramp = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    with Image.open(tmp_path / "ramp.png") as im:
        assert im.mode.startswith("I")
    got = load_image(tmp_path / "ramp.png", size=8)
    assert got.shape == (8, 8, 3) and got.min() == 0 and got.max() == 255 and 120 < got.mean() < 135


def test_decompression_bomb_is_one_line(world, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    _png_header_only(folder / "bomb.png", 14_000, 14_000)  # 196 megapixels
    Image.new("RGB", (8, 8)).save(folder / "ok.png")
    rc, err = _cli(["embed", f"checkpoint={world['classifier']}", f"images={tmp_path / 'imgs'}",
                    f"out={tmp_path / 'p.npz'}"], capsys)  # fmt: skip
    assert rc == 2 and "bomb.png has 14000x14000 = 196,000,000 pixels" in err and "AUTOLABEL_MAX_IMAGE_PIXELS" in err


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    from autolabel.data.images import load_image
    from autolabel.errors import DataError

    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    monkeypatch.setenv("AUTOLABEL_MAX_IMAGE_PIXELS", "50")
    with pytest.raises(DataError, match="10x10 = 100 pixels, over the limit of 50"):
        load_image(tmp_path / "small.png")
    monkeypatch.setenv("AUTOLABEL_MAX_IMAGE_PIXELS", "100")
    assert load_image(tmp_path / "small.png").shape == (10, 10, 3)


# ------------------------------------------------------------------------------------------------ masks


def _mask_folder(root: Path, masks: list[np.ndarray]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(np.full((*m.shape[:2], 3), 100, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(m).save(root / "masks" / f"{i}.png")
    return root


def _stray():
    m = np.zeros((2, 32, 32), np.uint8)
    m[:, 8:24, 8:24] = 1
    m[1, 0:3, 0:3] = 200  # a stray value in a 3x3 patch
    return list(m)


def _grey_rgb():
    m = np.zeros((32, 32), np.uint8)
    m[:, 10:20], m[:, 20:] = 60, 120
    return [np.repeat(m[..., None], 3, axis=2)]


def _colour():
    m = np.zeros((32, 32, 3), np.uint8)
    m[8:24, 8:24] = (128, 0, 0)
    return [m]


MASK_CASES = {"stray_value": (_stray, "1.png: mask value 200 covers only 9 of 2048 mask pixels"),
              "grey_rgb_mask": (_grey_rgb, "0.png: masks hold only 3 distinct values (0, 60, 120)"),
              "colour_mask_without_label_map": (_colour, "is a colour (RGB) mask")}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_suspicious_masks_fail_naming_file_and_value(tmp_path, case, capsys):
    make, message = MASK_CASES[case]
    folder = _mask_folder(tmp_path / "lab", make())
    rc, err = _cli(["fit", "segmentation", f"train={folder}", f"test={folder}", f"run.root={tmp_path / 'runs'}"],
                   capsys)  # fmt: skip
    assert rc == 2 and message in err, err
    if case == "colour_mask_without_label_map":
        assert "labelmap.txt" in err


def test_mask_check_warn_keeps_the_values(tmp_path, monkeypatch):
    from autolabel.data.labeled import LabeledFolder
    from autolabel.data.mask_checks import MaskValueWarning

    folder = _mask_folder(tmp_path / "lab", _stray())
    monkeypatch.setenv("AUTOLABEL_MASK_CHECK", "warn")
    with pytest.warns(MaskValueWarning, match="mask value 200"):
        assert LabeledFolder(folder).n_classes == 201
    assert LabeledFolder(folder, n_classes=201, mask_check="fail").n_classes == 201  # explicit count: no check


def test_input_guards_are_keys_of_every_command(world, tmp_path, capsys, monkeypatch):
    for env in ("AUTOLABEL_MASK_CHECK", "AUTOLABEL_MAX_IMAGE_PIXELS"):
        monkeypatch.setenv(env, "")  # "" = the default; restored (unset) after the test: the keys set os.environ
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(folder / "small.png")
    rc, err = _cli(["embed", f"checkpoint={world['classifier']}", f"images={tmp_path / 'imgs'}",
                    f"out={tmp_path / 'p.npz'}", "max_image_pixels=50"], capsys)  # fmt: skip
    assert rc == 2 and "10x10 = 100 pixels, over the limit of 50" in err and "max_image_pixels=N" in err
    lab = _mask_folder(tmp_path / "lab", _stray())
    rc, err = _cli(["fit", "segmentation", f"train={lab}", f"test={lab}", "mask_check=maybe"], capsys)
    assert rc == 2 and "mask_check='maybe'" in err and "use fail, warn or off" in err
    rc, err = _cli(["fit", "segmentation", f"train={lab}", f"test={lab}", "mask_check=off", "--config"], capsys)
    assert rc == 0 and os.environ["AUTOLABEL_MASK_CHECK"] == "off"


# ------------------------------------------------------------------------------------------------ concurrent runs


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from autolabel.engine.rundir import lock_run_dir
        lock_run_dir({str(run_dir)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_on_a_run_directory_stops_naming_the_pid(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world["lander"].parents[2], run)
    proc = _hold_lock(run)
    try:
        rc, err = _cli([*world["fit"], f"run.resume={run}"], capsys)
        assert rc == 2 and f"is in use by PID {proc.pid}" in err and "run.resume=never" in err, err
    finally:
        proc.kill()
        proc.wait()


def test_stale_lock_is_taken_over(tmp_path):
    from autolabel.engine.rundir import LOCK_NAME, open_run_dir, release_run_dir

    run = tmp_path / "exp" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("a: 1\n")
    (run / LOCK_NAME).write_text("999999999 deadhost\n")  # a killed run's lock file: no process holds it
    try:
        rd = open_run_dir(name="exp", root=tmp_path, resume=str(run), config_yaml="a: 1\n", argv=[])
        assert (rd.path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    finally:
        release_run_dir()


# ------------------------------------------------------------------------------------------------ file modes


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    from autolabel.engine.io import atomic_save_npz, write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        atomic_save_npz(tmp_path / "b.npz", x=np.zeros(2))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.npz").stat().st_mode & 0o777 == mode


def test_atomic_rewrite_keeps_an_existing_files_mode(tmp_path):
    from autolabel.engine.io import atomic_write_text

    p = tmp_path / "x.txt"
    p.write_text("old")
    p.chmod(0o640)
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and p.stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------------------------------------ duplicates cluster


class _SimilarityLink(torch.nn.Module):
    """A known-answer Hi-LANDER: P(same class) = cosine similarity, density = mean similarity of the in-edges."""

    feature_dim = 8

    def forward(self, g):
        from torch_geometric.utils import scatter

        p = g.edge_sim.clamp(1e-6, 1 - 1e-6)
        density = scatter(g.edge_sim, g.edge_index[1], dim=0, dim_size=g.num_nodes, reduce="mean")
        return torch.stack([torch.log1p(-p), torch.log(p)], dim=1), density


def _cluster(x: np.ndarray, k: int = 5) -> np.ndarray:
    from autolabel.hilander.hierarchy import cluster_pool

    return cluster_pool(_SimilarityLink(), x.astype(np.float32), k=k, tau=0.5, levels=3, device="cpu",
                        progress=False).labels  # fmt: skip


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_blob_features(5, 6, 8, spread=0.05, seed=2)


def test_exact_duplicates_form_one_cluster():
    x = np.repeat(make_blob_features(1, 1, 8, seed=0)[0], 100, axis=0)
    assert len(np.unique(_cluster(x))) == 1


def test_duplicate_groups_form_one_cluster_each():
    from autolabel.metrics.clustering import pairwise_fscore

    base, _ = make_blob_features(5, 1, 8, spread=0.0, seed=1)
    x, truth = np.repeat(base, 20, axis=0), np.repeat(np.arange(5), 20)
    assert pairwise_fscore(truth, _cluster(x, k=10))[2] == 1.0


def test_rows_equal_after_l2_normalization_cluster_together():
    base = make_blob_features(1, 1, 8, seed=3)[0]
    x = base * np.linspace(0.5, 3.0, 30)[:, None]  # 30 scaled copies: one point on the sphere
    assert len(np.unique(_cluster(x))) == 1


def test_duplicates_join_their_representative_with_full_confidence():
    from autolabel.hilander.hierarchy import cluster_pool, duplicate_groups
    from autolabel.hilander.search import knn_search

    x, _ = _blobs()
    xd = np.concatenate([x, x[:3] * 2.0])  # three scaled copies of rows 0-2
    rep = duplicate_groups(xd, *knn_search(xd, 5))
    assert rep[-3:].tolist() == [0, 1, 2] and (rep[:-3] == np.arange(len(x))).all()
    res = cluster_pool(_SimilarityLink(), xd.astype(np.float32), k=5, tau=0.5, levels=3, device="cpu", progress=False)
    assert (res.labels[-3:] == res.labels[:3]).all()
    assert (res.confidence[-3:] == 1.0).all() and (res.join_level[-3:] == 0).all()
    assert res.levels[0]["duplicates_merged"] == 3 and len(res.density) == len(xd)


@pytest.mark.parametrize("noise", [0.0, 1e-6], ids=["exact_copies", "near_duplicates"])
def test_duplicated_pool_scores_like_the_deduplicated_pool(noise):
    from autolabel.metrics.clustering import bcubed_fscore

    x, y = _blobs()
    dedup = bcubed_fscore(y, _cluster(x))[2]
    rng = np.random.default_rng(0)
    xd = np.repeat(x, 3, axis=0) + noise * rng.standard_normal((3 * len(x), x.shape[1]))
    yd = np.repeat(y, 3)
    dup = bcubed_fscore(yd, _cluster(xd, k=8))[2]
    assert abs(dup - dedup) <= 0.05, (dup, dedup)


def test_decode_with_tied_densities_is_still_a_forest():
    from autolabel.hilander.hierarchy import decode_level

    # three identical nodes, all linked both ways, equal densities and link scores
    ei = torch.tensor([[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]])
    cluster_id, peaks, edges = decode_level(ei, torch.zeros(3), torch.ones(6), 0.5, 3)
    assert len(peaks) >= 1 and edges == 3 - len(peaks) and cluster_id.shape == (3,)
