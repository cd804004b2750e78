"""Validation metrics are synchronized across DDP ranks (torchmetrics): on 2 gloo processes, val/miou and val/nme
equal the single-process values on the same data, and differ from what rank 0 alone would report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_metrics_script.py")


def test_val_metrics_two_gloo_ranks_equal_single_process(tmp_path):
    out = tmp_path / "metrics.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOLABEL_")}
    env["OMP_NUM_THREADS"] = "1"
    run = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    res = json.loads(out.read_text())
    assert res["world_size"] == 2
    assert res["seg"]["val/miou"] == pytest.approx(res["single"]["seg_miou"], abs=1e-6)
    assert res["kp"]["val/nme"] == pytest.approx(res["single"]["kp_nme"], abs=1e-5)
    # the check has teeth: rank 0's half alone gives other numbers
    assert abs(res["rank0_only"]["seg_miou"] - res["single"]["seg_miou"]) > 1e-3
    assert abs(res["rank0_only"]["kp_nme"] - res["single"]["kp_nme"]) > 1e-3
