"""benchmarks/gpu_check.py's CPU dry run (``--device cpu --tiny``), so the script a lent GPU runs is not broken on the
day one shows up: every check reports a status and a time, the CUDA-only precisions are skipped with a reason, and
the JSON and the markdown table are written. Plus the driver's contract: a failing check is recorded with its
traceback while the next one still runs, and checks that no longer fit the time budget are skipped."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("gpu_check", None)


def test_cpu_dry_run_runs_every_check(gpu_check, tmp_path):
    out = tmp_path / "out"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    checks = report["checks"]
    assert list(checks) == [c.name for c in gpu_check.CHECKS]
    for name, r in checks.items():
        assert isinstance(r["seconds"], float) and r["seconds"] >= 0, name
        expected = "skipped" if name in ("pipeline_16mixed", "pipeline_bf16mixed") else "ok"
        assert r["status"] == expected, (name, r.get("error"), r.get("traceback", "")[-2000:])
    assert "CUDA" in checks["pipeline_16mixed"]["reason"]
    m = {name: r.get("metrics", {}) for name, r in checks.items()}
    assert m["pipeline_fp32"]["trainer_precisions"] == ["32-true"] and m["pipeline_fp32"]["stage_seconds"]["gan"] > 0
    assert m["fit_gan_64"]["kimg_per_min"] > 0 and m["fit_gan_256"]["resolution"] > m["fit_gan_64"]["resolution"]
    assert m["labels_synthesize"]["synthesize_images"] == 8 and m["labels_synthesize"]["labels_steps"] > 0
    assert m["lpips"]["max_rel_diff"] < 1e-5  # the same CPU computation twice
    for name in ("hilander_cluster_100k", "hilander_cluster_1m"):
        assert m[name]["model"] == "meta-trained" and m[name]["knn_backend"].startswith("torch exact")
        assert m[name]["recall_at_10_vs_exact_cpu"] == 1.0 and m[name]["recall_at_10_full_vs_cpu_faiss"] == 1.0
        assert {"seconds_knn", "seconds_gnn", "seconds_decode"} <= set(m[name])
    assert m["ddp_devices1"]["strategies"] == ["DDPStrategy"] and m["ddp_devices1"]["process_group_backend"] == "gloo"
    table = (out / "gpu_check.md").read_text()
    assert "device cpu (tiny)" in table
    for name in checks:
        assert f"| {name} | {checks[name]['status']} |" in table


def test_a_failure_is_recorded_and_the_budget_skips_the_rest(gpu_check, tmp_path, monkeypatch):
    def boom(ctx):
        raise ValueError("planted failure")

    def wrong(ctx):
        raise gpu_check.CheckFailed("planted verdict", {"measured": 1.5})

    def slow(ctx):
        import time

        time.sleep(1.2)
        return {"slept": True}

    monkeypatch.setattr(gpu_check, "CHECKS", [gpu_check.Check("boom", boom, 10, 0), gpu_check.Check("wrong", wrong, 10, 0),
                                              gpu_check.Check("slow", slow, 10, 0), gpu_check.Check("late", slow, 10, 5)])  # fmt: skip
    out = tmp_path / "out"
    assert gpu_check.main(["--device", "cpu", "--out", str(out), "--work", str(tmp_path), "--budget-s", "5"]) == 0
    checks = json.loads((out / "gpu_check.json").read_text())["checks"]
    assert checks["boom"]["status"] == "failed" and "planted failure" in checks["boom"]["error"]
    assert "ValueError" in checks["boom"]["traceback"]
    assert checks["wrong"]["status"] == "failed" and checks["wrong"]["metrics"] == {"measured": 1.5}  # kept
    assert checks["slow"]["status"] == "ok" and checks["slow"]["metrics"] == {"slept": True}
    assert checks["late"]["status"] == "skipped" and "budget" in checks["late"]["reason"]
