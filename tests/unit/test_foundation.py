"""Foundation: import hygiene, config loading/validation, run directories, atomic IO, the trainer factory."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import MISSING

from autolabel.config import RunConfig, TrainerConfig, config_hash, load_config, to_object
from autolabel.engine import build_trainer, fit, last_checkpoint, open_run_dir
from autolabel.engine.io import atomic_save_npz, atomic_write_text, read_json, write_json
from autolabel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_platform_is_the_standard_library():
    import platform

    assert "site-packages" not in platform.__file__
    assert Path(platform.__file__).parent == Path(os.__file__).parent
    assert not (ROOT / "platform" / "__init__.py").exists()
    assert importlib.util.find_spec("autolabel").origin.endswith(os.path.join("platform", "autolabel", "__init__.py"))


_SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "runs", "node_modules", "__pycache__", ".torch_home_unused"}
_LIGHTNING_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?:lightning(?:\.\w+)*|lightning_fabric(?:\.\w+)*)\b", re.M)


def _project_python_files() -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        out += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return out


def test_no_lightning_namespace_imports():
    """Only `pytorch_lightning` is imported: not the `lightning` umbrella package nor `lightning_fabric` (two copies of
    the same classes fail isinstance checks across them). Scans the files themselves, so it holds outside git too."""
    files = _project_python_files()
    names = {f.relative_to(ROOT).as_posix() for f in files}
    assert {"pipelines/cli.py", "platform/autolabel/engine/trainer.py", "tests/unit/test_foundation.py"} <= names
    assert len(files) > 50, "the scan found too few files to mean anything"
    assert _LIGHTNING_IMPORT.search("from lightning_fabric.plugins import X") and _LIGHTNING_IMPORT.search(
        "    import lightning.pytorch as pl"
    ) and not _LIGHTNING_IMPORT.search("import pytorch_lightning as pl")  # fmt: skip
    hits = [f"{f.relative_to(ROOT)}: {m.group(0).strip()}" for f in files
            for m in _LIGHTNING_IMPORT.finditer(f.read_text(encoding="utf-8", errors="replace"))]  # fmt: skip
    assert hits == [], "\n".join(hits)


@dataclass
class _Sub:
    width: int = 8
    names: list = field(default_factory=lambda: ["a"])


@dataclass
class _Schema:
    data: str = MISSING
    lr: float = 0.1
    sub: _Sub = field(default_factory=_Sub)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def test_config_merge_order(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.5\nsub:\n  width: 16\ndata: x\n")
    cfg = load_config(_Schema, yaml_files=[y], overrides=["sub.width=32", "trainer.devices=[0,1]"])
    assert cfg.lr == 0.5 and cfg.sub.width == 32 and list(cfg.trainer.devices) == [0, 1]
    obj = to_object(cfg)
    assert isinstance(obj, _Schema) and isinstance(obj.trainer, TrainerConfig)


def test_config_typo_names_path_and_closest_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'sub.widht'.*did you mean 'sub.width'"):
        load_config(_Schema, overrides=["data=x", "sub.widht=3"])


def test_config_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"bad value for 'lr'"):
        load_config(_Schema, overrides=["data=x", "lr=fast"])


def test_config_missing_value_says_how_to_set_it():
    with pytest.raises(ConfigError, match=r"'data' is not set: pass data=VALUE"):
        load_config(_Schema)


def test_config_value_check_and_bad_override_and_missing_yaml(tmp_path):
    with pytest.raises(ConfigError, match="trainer.precision"):
        load_config(_Schema, overrides=["data=x", "trainer.precision=17"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(_Schema, overrides=["data"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(_Schema, overrides=[f"config={tmp_path / 'nope.yaml'}"])


def test_config_hash_stable_and_ignores():
    a = {"x": 1, "y": {"z": 2, "w": 3}}
    b = {"y": {"w": 3, "z": 2}, "x": 1}
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({"x": 2, "y": {"z": 2, "w": 3}})
    assert config_hash(a, ignore=["y.w"]) == config_hash({"x": 1, "y": {"z": 2, "w": 99}}, ignore=["y.w"])


def test_atomic_writes_leave_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a" / "f.txt", "hello")
    write_json(tmp_path / "j.json", {"n": np.int64(3), "v": np.float32(0.5), "p": tmp_path})
    atomic_save_npz(tmp_path / "z.npz", x=np.arange(3))
    assert (tmp_path / "a" / "f.txt").read_text() == "hello"
    assert read_json(tmp_path / "j.json")["n"] == 3
    assert np.load(tmp_path / "z.npz")["x"].tolist() == [0, 1, 2]
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_run_dir_new_resume_and_pinned(tmp_path):
    r1 = open_run_dir(name="exp", root=tmp_path, config_yaml="a: 1\n", argv=["autolabel", "x"])
    assert (r1.path / "config.yaml").read_text() == "a: 1\n"
    assert "autolabel x" in (r1.path / "command.txt").read_text()
    assert (r1.path / "git.json").is_file()
    os.environ.pop("AUTOLABEL_RUN_DIR")
    r2 = open_run_dir(name="exp", root=tmp_path, config_yaml="a: 1\n", argv=["autolabel", "x"])
    assert r2.path == r1.path  # same config -> resumes the same run
    os.environ.pop("AUTOLABEL_RUN_DIR")
    r3 = open_run_dir(name="exp", root=tmp_path, config_yaml="a: 2\n", argv=[])
    assert r3.path != r1.path  # changed config -> new run
    os.environ.pop("AUTOLABEL_RUN_DIR")
    r4 = open_run_dir(name="exp", root=tmp_path, resume="never", config_yaml="a: 2\n", argv=[])
    assert r4.path not in (r1.path, r3.path)
    os.environ.pop("AUTOLABEL_RUN_DIR")
    r5 = open_run_dir(name="exp", root=tmp_path, resume=str(r1.path), config_yaml="a: 1\n", argv=[])
    assert r5.path == r1.path
    os.environ.pop("AUTOLABEL_RUN_DIR")
    with pytest.raises(ConfigError, match="not a run directory"):
        open_run_dir(name="exp", root=tmp_path, resume=str(tmp_path / "nothing"), argv=[])


def test_run_dir_non_zero_rank_follows_rank0(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    r0 = open_run_dir(name="d", root=tmp_path, config_yaml="a: 1\n", argv=[])
    os.environ.pop("AUTOLABEL_RUN_DIR")
    monkeypatch.setenv("RANK", "1")
    r1 = open_run_dir(name="d", root=tmp_path, config_yaml="a: 1\n", argv=[], wait_s=2)
    assert r1.path == r0.path
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    os.environ.pop("AUTOLABEL_RUN_DIR")
    with pytest.raises(ConfigError, match="run.dir"):
        open_run_dir(name="d", root=tmp_path, argv=[], wait_s=0.6)


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


class _DM(pl.LightningDataModule):
    def train_dataloader(self):
        return _loader()


def test_trainer_factory_logs_checkpoints_and_resumes(tmp_path):
    tc = TrainerConfig(accelerator="cpu", max_steps=8, enable_progress_bar=False, log_every_n_steps=1)
    m = _Tiny()
    trainer = build_trainer(tc, tmp_path)
    trainer.fit(m, train_dataloaders=_loader())
    assert last_checkpoint(tmp_path) is not None
    assert (tmp_path / "logs" / "metrics.csv").is_file()
    assert any((tmp_path / "tb").rglob("events.out.tfevents*"))

    # resume: a longer budget continues from step 8 instead of restarting
    class FirstStep(pl.Callback):
        steps: list[int] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.steps.append(trainer.global_step)

    tc2 = TrainerConfig(accelerator="cpu", max_steps=12, enable_progress_bar=False, log_every_n_steps=1)
    m2 = _Tiny()
    seen = FirstStep()
    trainer2 = fit(m2, _DM(), tc2, tmp_path, callbacks=[seen])
    assert trainer2.global_step == 12
    assert seen.steps == [8, 9, 10, 11]  # only the 4 new steps ran, starting where the checkpoint left off
    # the CSV log keeps steps 0..7 and goes on after them (Lightning's own writer deletes the file of the first fit;
    # a restart would log steps 0..7 a second time)
    rows = [line.split(",") for line in (tmp_path / "logs" / "metrics.csv").read_text().splitlines()]
    col = rows[0].index("train/loss")
    logged = [int(r[rows[0].index("step")]) for r in rows[1:] if len(r) > col and r[col] != ""]
    assert logged == list(range(12))
    # a finished run fitted again (nothing left to train) leaves the log as it was
    before = (tmp_path / "logs" / "metrics.csv").read_text()
    fit(_Tiny(), _DM(), tc2, tmp_path)
    assert (tmp_path / "logs" / "metrics.csv").read_text() == before
    ck = torch.load(last_checkpoint(tmp_path), weights_only=False)
    assert ck["global_step"] == 12


@pytest.mark.parametrize("verbose", ["", "1"])
def test_console_shows_no_lightning_banners(verbose, tmp_path, monkeypatch):
    import logging

    monkeypatch.setenv("AUTOLABEL_VERBOSE", verbose)
    # levels as Lightning leaves them in a console (pytest's own logging changes them); setLevel also clears the
    # loggers' cached levels, which assigning .level would not
    names = ["pytorch_lightning", "lightning_fabric", "pytorch_lightning.utilities.rank_zero",
             "lightning_fabric.utilities.rank_zero"]  # fmt: skip
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.level for lg in loggers]
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    try:
        for lg, level in zip(loggers, (logging.INFO, logging.INFO, logging.NOTSET, logging.NOTSET)):
            lg.setLevel(level)
        for lg in loggers[:2]:
            lg.addHandler(handler)
        fit(_Tiny(), _DM(), TrainerConfig(accelerator="cpu", max_steps=2, enable_progress_bar=False), tmp_path)
    finally:
        for lg, level in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.setLevel(level)
    out = "\n".join(seen)
    for banner in ("TPU available", "GPU available", "litlogger", "`Trainer.fit` stopped"):
        assert (banner in out) == bool(verbose), banner


@pytest.mark.parametrize("verbose", ["", "1"])
def test_cli_start_drops_pyg_import_notice(verbose):
    # PyG's import-time "`torch.jit.script` is deprecated" FutureWarning reached every cluster/embed console; the CLI
    # installs the filter (autolabel.engine.console.quiet_lightning) before anything heavy is imported
    code = "from autolabel.engine.console import quiet_lightning; quiet_lightning(); import torch_geometric"
    env = {**os.environ, "AUTOLABEL_VERBOSE": verbose, "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert ("torch.jit.script" in out.stderr) == bool(verbose), out.stderr


class _Logged(_Tiny):
    def training_step(self, batch, _):
        loss = super().training_step(batch, _)
        self.log("train/shown", 0.25, prog_bar=True)
        return loss


def test_our_warnings_are_one_line_and_others_keep_their_display(monkeypatch, capsys):
    from autolabel.engine.console import one_line_warnings
    from autolabel.hilander.calibration import CalibrationWarning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    one_line_warnings()
    one_line_warnings()  # idempotent: not wrapped twice
    ours = warnings.formatwarning("tau was calibrated on only 2 held-out classes", CalibrationWarning, "x.py", 3)
    assert ours == "warning: tau was calibrated on only 2 held-out classes\n"
    other = warnings.formatwarning("a library's notice", FutureWarning, "lib.py", 7)
    assert other.startswith("lib.py:7: FutureWarning: a library's notice")
    with pytest.warns(CalibrationWarning):  # recording still works
        warnings.warn("recorded", CalibrationWarning, stacklevel=1)


def test_progress_in_a_log_file_is_a_few_plain_lines(tmp_path, monkeypatch, capsys):
    """Not a terminal (a log file, a cluster job): no bar rewriting itself, one line per tenth of the steps with the
    progress-bar metrics, speed and time left; a terminal keeps the bar; enable_progress_bar=false shows neither."""
    from pytorch_lightning.callbacks import TQDMProgressBar

    from autolabel.engine import console
    from autolabel.engine.progress import LogProgress

    monkeypatch.setattr(console.sys, "stderr", io.StringIO())  # not a TTY
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    console.throttle_bars_in_logs()
    assert os.environ["TQDM_MININTERVAL"] == "30.0"  # tqdm bars in the log: one redraw per 30 s
    tc = TrainerConfig(accelerator="cpu", max_steps=20, log_every_n_steps=1)
    trainer = build_trainer(tc, tmp_path, tensorboard=False)
    assert any(isinstance(c, LogProgress) for c in trainer.callbacks)
    assert not any(isinstance(c, TQDMProgressBar) for c in trainer.callbacks)
    capsys.readouterr()
    trainer.fit(_Logged(), train_dataloaders=_loader())  # 4 batches per epoch, 5 epochs
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.strip().startswith("step ")]
    assert [line.split()[1] for line in lines] == [f"{s}/20" for s in range(2, 21, 2)]  # every 2 of 20 steps
    assert "(100%)" in lines[-1] and "train/shown=0.25" in lines[-1] and "steps/s" in lines[0]
    assert "left" in lines[0] and "\r" not in out.out + out.err
    # resumed for 10 more steps: the schedule goes on from step 20 (every 3 of 30)
    more = build_trainer(TrainerConfig(accelerator="cpu", max_steps=30, log_every_n_steps=1), tmp_path,
                         tensorboard=False)  # fmt: skip
    more.fit(_Logged(), train_dataloaders=_loader(), ckpt_path=str(last_checkpoint(tmp_path)))
    steps = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.strip().startswith("step ")]
    assert steps == ["21/30", "24/30", "27/30", "30/30"]

    monkeypatch.setattr("autolabel.engine.trainer.interactive", lambda: True)
    bar = build_trainer(tc, tmp_path / "tty", tensorboard=False)
    assert any(isinstance(c, TQDMProgressBar) for c in bar.callbacks)
    assert not any(isinstance(c, LogProgress) for c in bar.callbacks)
    off = build_trainer(TrainerConfig(accelerator="cpu", enable_progress_bar=False), tmp_path / "off")
    assert not any(isinstance(c, (LogProgress, TQDMProgressBar)) for c in off.callbacks)


def test_trainer_config_from_dictconfig_and_dict(tmp_path):
    cfg = load_config(_Schema, overrides=["data=x", "trainer.accelerator=cpu", "trainer.max_steps=1"])
    t = build_trainer(cfg.trainer, tmp_path, tensorboard=False)
    assert t.max_steps == 1
    t2 = build_trainer({"accelerator": "cpu", "max_steps": 2}, tmp_path, tensorboard=False)
    assert t2.max_steps == 2


def test_run_config_defaults():
    rc = RunConfig()
    assert rc.resume == "auto" and rc.root == "runs"


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    assert all(
        c in out.stdout for c in ("fit hilander", "fit classifier", "cluster", "embed", "run", "sweep", "report")
    )


def test_cli_help_does_not_import_torch_or_lightning():
    # `autolabel --help` and `COMMAND --help` stay instant: the heavy libraries load only when a command runs
    code = ("import sys; from pipelines.cli import main; main(['--help']); main(['fit', 'hilander', '--help']); "
            "heavy = sorted(m for m in ('torch', 'pytorch_lightning', 'torch_geometric', 'faiss') if m in sys.modules); "
            "print('HEAVY', heavy)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_cli_unknown_command_suggests():
    from pipelines.cli import main

    assert main(["clustr"]) == 2


def test_seed_all_gives_torch_manual_seeds_draws_without_the_lazy_device_queue(monkeypatch):
    """seed_all (run before every training batch by StepSeeder) seeds the CPU generator exactly as torch.manual_seed
    does, plus numpy and random; and it does not go through the lazy per-backend seeding that formats the call stack
    on every call when no GPU context exists."""
    import random
    import traceback

    from autolabel.engine.trainer import seed_all

    torch.manual_seed(123)
    want = torch.rand(4)
    seed_all(123)
    assert torch.equal(torch.rand(4), want)
    seed_all(7)
    draws = (torch.randn(3), np.random.rand(3), random.random())
    seed_all(7)
    assert torch.equal(torch.randn(3), draws[0]) and np.array_equal(np.random.rand(3), draws[1])
    assert random.random() == draws[2]

    stacks = []
    real = traceback.format_stack
    monkeypatch.setattr(traceback, "format_stack", lambda *a, **k: stacks.append(1) or real(*a, **k))
    torch.manual_seed(0)  # the probe works: torch.manual_seed formats the stack for its lazy device seeds
    probe, stacks[:] = len(stacks), []
    for i in range(5):
        seed_all(i)
    assert stacks == [] and (probe > 0 or torch.cuda.is_initialized())
