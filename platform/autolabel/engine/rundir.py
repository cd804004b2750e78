"""Run directories: one folder per run holding its config, command line, git state, stages, checkpoints and logs.

Layout::

    runs/<name>/<YYYY-mm-dd_HHMMSS>/
        config.yaml      resolved config
        command.txt      the command line
        git.json         commit, branch, dirty flag (when inside a git checkout)
        <stage>/checkpoints/last.ckpt, <stage>/logs/metrics.csv, <stage>/tb/, <stage>/manifest.json

Rank 0 creates the directory and exports ``AUTOLABEL_RUN_DIR``; every other rank reads that path (Lightning's
subprocess launcher inherits the environment). Ranks started independently (SLURM, torchrun) find the directory
through ``runs/<name>/latest.json`` tagged with the job id.

Rank 0 holds an exclusive ``fcntl`` lock on ``<run dir>/.lock`` (which records its PID and host) until the command
ends, so a second process opening the same run directory stops with a message naming the PID that holds it instead
of training the same stages at once. The kernel drops the lock when its process dies, so a lock file left by a killed
run is simply taken over (stale-lock recovery needs no clean-up).
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from autolabel.engine.dist import global_rank
from autolabel.engine.io import atomic_write_text, read_json, write_json
from autolabel.errors import ConfigError

ENV_RUN_DIR = "AUTOLABEL_RUN_DIR"
LOCK_NAME = ".lock"
_exported: list[str] = []  # run dirs this process exported (cleared by release_run_dir)
_locks: dict[str, int] = {}  # run dir -> open fd of its held lock file (released by release_run_dir)


def _lock_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 256).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if not text:
        return "another process (PID not recorded yet)"
    pid, host = text[0], (text[1] if len(text) > 1 else "?")
    return f"PID {pid} on {host}"


def lock_run_dir(path: str | os.PathLike) -> None:
    """Take the run directory's exclusive lock for this process (re-entrant); a ConfigError naming the holder's PID
    when another live process holds it. A lock file whose process died is taken over (the kernel released it)."""
    import fcntl
    import socket

    key = str(Path(path))
    if key in _locks:
        return
    fd = os.open(Path(path) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _lock_holder(fd)
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(
                f"run directory {key} is in use by {holder}: wait for that run to finish (or stop it), or start a "
                "separate run with run.resume=never"
            ) from None
        raise ConfigError(f"cannot lock run directory {key} ({e.strerror}): put run.root on a file system with "
                          "working locks") from None  # fmt: skip
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    _locks[key] = fd


def unlock_run_dirs() -> None:
    """Release every run-directory lock this process holds."""
    import fcntl

    while _locks:
        _, fd = _locks.popitem()
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _job_token() -> str:
    for var in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "MASTER_PORT"):
        if var in os.environ:
            return f"{var}={os.environ[var]}"
    return f"pid={os.getppid()}"


@dataclass(frozen=True)
class RunDir:
    """A run directory; ``stage(name)`` gives (and creates) a stage folder inside it."""

    path: Path

    def stage(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def __fspath__(self) -> str:
        return str(self.path)


def git_state(cwd: str | os.PathLike | None = None) -> dict:
    """Commit, branch and dirty flag of the checkout holding ``cwd`` (empty when not a git checkout)."""
    cwd = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d_%H%M%S")


def _newest_run(name_dir: Path) -> Path | None:
    if not name_dir.is_dir():
        return None
    runs = sorted(p for p in name_dir.iterdir() if p.is_dir() and (p / "config.yaml").is_file())
    return runs[-1] if runs else None


def _same_config(run: Path, config_yaml: str) -> bool:
    try:
        return (run / "config.yaml").read_text() == config_yaml
    except OSError:
        return False


def open_run_dir(
    *,
    name: str,
    root: str | os.PathLike = "runs",
    resume: str = "auto",
    pinned: str | os.PathLike | None = None,
    config_yaml: str = "",
    argv: list[str] | None = None,
    wait_s: float = 120.0,
) -> RunDir:
    """Create or reopen the run directory for this process.

    * ``pinned`` (``run.dir``) or ``$AUTOLABEL_RUN_DIR``: use exactly that folder.
    * ``resume="auto"``: reuse the newest ``<root>/<name>/*`` run whose resolved config is identical (so rerunning the
      same command continues it), else start a new one.
    * ``resume="never"``: always a new timestamped run.
    * ``resume=<path>``: continue that run directory (must exist).
    """
    argv = list(sys.argv if argv is None else argv)
    env_dir = os.environ.get(ENV_RUN_DIR)
    rank = global_rank()
    name_dir = Path(root) / name
    if pinned or env_dir:
        path = Path(pinned or env_dir)  # type: ignore[arg-type]
    elif resume not in ("auto", "never"):
        path = Path(resume)
        if not (path / "config.yaml").is_file():
            raise ConfigError(
                f"run.resume={resume} is not a run directory (no config.yaml); use run.resume=auto or never"
            )
    elif rank != 0:
        path = _wait_for_rank0(name_dir, wait_s)
    else:
        newest = _newest_run(name_dir) if resume == "auto" else None
        if newest is not None and _same_config(newest, config_yaml):
            path = newest
        else:
            path = name_dir / _timestamp()
            while path.exists():  # two runs started within one second
                time.sleep(1.0)
                path = name_dir / _timestamp()
    run = RunDir(path.resolve())
    if rank == 0:
        from autolabel.engine.paths import check_writable

        check_writable(run.path, key="run.root")  # a read-only or full disk fails here, before any training
        run.path.mkdir(parents=True, exist_ok=True)
        lock_run_dir(run.path)
        if config_yaml:
            atomic_write_text(run.config_path, config_yaml)
        with open(run.path / "command.txt", "a", encoding="utf-8") as f:
            f.write(f"{_dt.datetime.now().isoformat(timespec='seconds')}  {shlex.join(argv)}\n")
        write_json(run.path / "git.json", git_state())
        write_json(name_dir / "latest.json", {"path": str(run.path), "job": _job_token()})
    if os.environ.get(ENV_RUN_DIR) != str(run.path):
        os.environ[ENV_RUN_DIR] = str(run.path)
        _exported.append(str(run.path))
    return run


def release_run_dir() -> None:
    """Forget the run directory this process exported, so a next command in the same process opens its own
    (child ranks spawned during the command already inherited it), and release its run-directory lock."""
    unlock_run_dirs()
    while _exported:
        if os.environ.get(ENV_RUN_DIR) == _exported.pop():
            os.environ.pop(ENV_RUN_DIR, None)


def _wait_for_rank0(name_dir: Path, wait_s: float) -> Path:
    token = _job_token()
    deadline = time.monotonic() + wait_s
    pointer = name_dir / "latest.json"
    while time.monotonic() < deadline:
        if pointer.is_file():
            try:
                info = read_json(pointer)
            except (OSError, ValueError):
                info = {}
            if info.get("job") == token:
                return Path(info["path"])
        time.sleep(0.5)
    raise ConfigError(
        f"rank {global_rank()} found no run directory from rank 0 in {wait_s:.0f}s under {name_dir}; "
        f"pass run.dir=PATH (or set {ENV_RUN_DIR}) on every rank"
    )
