"""Summarize a mutmut 3 run made by benchmarks/mutation_run.sh: per module, how many of the selected core-math mutants
were killed / survived / timed out, and (--diffs) every survivor's diff.

    python benchmarks/mutation_summary.py WORK_DIR [--diffs]
    python benchmarks/mutation_summary.py WORK_DIR --select FRACTION   # prints the mutant names to run
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

# module -> its core-math functions (None = every function in the module)
CORE: dict[str, list[str] | None] = {
    "autolabel.gan.losses": None,
    "autolabel.metrics.dense": None,
    "autolabel.metrics.clustering": None,
    "autolabel.handsoff.hypercolumns": ["x_pixel_xy", "x_rescale_coords", "xǁHypercolumnExtractorǁgather",
                                        "xǁHypercolumnExtractorǁresize_all"],
    "autolabel.handsoff.label_generator": ["x_js_divergence", "x_image_uncertainty", "x_majority_vote",
                                           "x_heatmap_values", "x_keypoint_heatmaps",
                                           "xǁLabelGeneratorEnsembleǁmember_losses", "xǁLabelGeneratorEnsembleǁforward"],
    "autolabel.handsoff.synthesis": ["x_filter_plan", "x_filter_indices"],
    "autolabel.hilander.lander": ["x_lander_loss", "xǁLANDERǁforward", "xǁLANDERǁembed", "xǁLANDERǁnode_input",
                               "xǁSimilarityConvǁforward", "xǁSimilarityConvǁmessage",
                               "xǁSimilarityConvǁmessage_and_aggregate"],
    "autolabel.hilander.graphs": None,
    "autolabel.hilander.hierarchy": ["x_best_parent", "x_find_roots", "x_forest_clusters", "x_decode_level",
                                     "x_supernode_features", "x_build_training_levels"],
}  # fmt: skip
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", -24: "timeout",
          24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}  # fmt: skip


def exit_codes(work: Path) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in (work / "mutants" / "src").rglob("*.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def core_names(codes: dict) -> dict[str, list[str]]:
    by_module: dict[str, list[str]] = {}
    for key in sorted(codes):
        module, _, fn = key.rpartition(".")
        if module in CORE and (CORE[module] is None or fn.split("__mutmut_")[0] in CORE[module]):
            by_module.setdefault(module, []).append(key)
    return by_module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--select", type=float, default=None)
    ap.add_argument("--diffs", action="store_true")
    args = ap.parse_args()
    codes = exit_codes(args.work)
    by_module = core_names(codes)
    if args.select is not None:
        rng = random.Random(0)
        for _module, keys in by_module.items():
            n = min(len(keys), max(30, int(round(len(keys) * args.select))))
            print("\n".join(sorted(rng.sample(keys, n))))
        return
    print("| module | core mutants | tested | killed | survived | timeout | survival |")
    print("|---|---|---|---|---|---|---|")
    survivors = []
    for module, keys in by_module.items():
        c = Counter(STATUS.get(codes[k], "other") for k in keys)
        tested = sum(v for s, v in c.items() if s != "not checked")
        rate = c["survived"] / tested if tested else float("nan")
        print(f"| `{module}` | {len(keys)} | {tested} | {c['killed']} | {c['survived']} | {c['timeout']} | "
              f"{rate:.0%} |")  # fmt: skip
        survivors += [k for k in keys if STATUS.get(codes[k]) == "survived"]
    if args.diffs:
        mutmut = str(Path(sys.executable).with_name("mutmut"))
        for k in survivors:
            diff = subprocess.run([mutmut, "show", k], cwd=args.work, capture_output=True, text=True).stdout
            lines = [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
            print(f"\n{k}\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
