#!/usr/bin/env bash
# Hand-run mutation testing of the core math modules with mutmut 3 (pip install mutmut; not a project dependency,
# not in CI). Usage: benchmarks/mutation_run.sh [WORK_DIR] [SAMPLE_FRACTION]
#   WORK_DIR        scratch copy of the repository (default /tmp/autolabel-mutmut); the checkout is never touched
#   SAMPLE_FRACTION share of each module's mutants to test (default 1.0 = all; at least 30 per module)
# Results: python benchmarks/mutation_summary.py WORK_DIR  (per-module table + every surviving mutant's diff)
#
# Two work-arounds for mutmut 3.8: it names modules after their path with only a `src.` prefix stripped, so the
# package is copied to WORK_DIR/src/autolabel; and its fork server starts before the stats phase sets
# MUTANT_UNDER_TEST=stats, so without the variable exported up front no test is ever associated with a mutant.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-/tmp/autolabel-mutmut}"
FRACTION="${2:-1.0}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
rm -rf "$WORK" && mkdir -p "$WORK/src"
git -C "$REPO" archive HEAD platform tests pyproject.toml | tar -x -C "$WORK"
mv "$WORK/platform/autolabel" "$WORK/src/" && rmdir "$WORK/platform"
cat > "$WORK/setup.cfg" <<'CFG'
[mutmut]
source_paths=src/autolabel
only_mutate=
    src/autolabel/metrics/dense.py
    src/autolabel/metrics/clustering.py
    src/autolabel/gan/losses.py
    src/autolabel/handsoff/hypercolumns.py
    src/autolabel/handsoff/label_generator.py
    src/autolabel/handsoff/synthesis.py
    src/autolabel/hilander/lander.py
    src/autolabel/hilander/graphs.py
    src/autolabel/hilander/hierarchy.py
pytest_add_cli_args_test_selection=
    tests/unit/test_math_gan.py
    tests/unit/test_math_dense.py
    tests/unit/test_math_hilander.py
    tests/unit/test_math_handsoff.py
    tests/unit/test_coords.py
    tests/unit/test_metrics_dense.py
    tests/unit/test_metrics_clustering.py
    tests/unit/test_gan_generator.py
    tests/unit/test_hypercolumns.py
    tests/unit/test_label_generator.py
    tests/unit/test_synthesis.py
    tests/unit/test_hilander.py
CFG
cd "$WORK"
export MUTANT_UNDER_TEST=stats OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$WORK/mutants/src"
MUTMUT="$(dirname "$PY")/mutmut"
# 1) generate the mutants only (a run restricted to a name that matches nothing stops after generation + stats)
nice -n 15 "$MUTMUT" run --max-children 1 "autolabel.none.x_none__mutmut_1" >/dev/null 2>&1 || true
# 2) the core math functions of each module (the rest of synthesis.py is file I/O; select_tau/_cap_k are glue)
NAMES="$("$PY" "$REPO/benchmarks/mutation_summary.py" "$WORK" --select "$FRACTION")"
nice -n 15 "$MUTMUT" run --max-children 1 $NAMES
