"""Shared test set-up: offline, CPU, small thread pools, no state leaking between tests."""

from __future__ import annotations

import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TORCH_HOME", os.path.join(os.path.dirname(__file__), ".torch_home_unused"))
os.environ.setdefault("PL_DISABLE_FORK", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolate_run_env(monkeypatch):
    """Run directories export AUTOLABEL_RUN_DIR (and the runner AUTOLABEL_ATTEMPT) for child ranks; never let them leak
    into the next test. The intra-op thread count is restored too: tests that compare an in-process run with a child
    process's (kill-and-resume) need both to reduce floats in the same order."""
    threads = torch.get_num_threads()
    for name in ("AUTOLABEL_RUN_DIR", "AUTOLABEL_ATTEMPT"):
        monkeypatch.delenv(name, raising=False)
    yield
    for name in ("AUTOLABEL_RUN_DIR", "AUTOLABEL_ATTEMPT"):
        os.environ.pop(name, None)
    leaked = torch.get_num_threads()
    torch.set_num_threads(threads)
    assert leaked == threads, f"the test left torch.get_num_threads() at {leaked} (was {threads}): restore it"
