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
    """Run directories export AUTOLABEL_RUN_DIR for child ranks; never let it leak into the next test."""
    monkeypatch.delenv("AUTOLABEL_RUN_DIR", raising=False)
    yield
    os.environ.pop("AUTOLABEL_RUN_DIR", None)
