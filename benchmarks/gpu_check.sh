#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a machine whose Python lacks some of autolabel's packages (the lent GPU machine):
# install the wheels carried in .whl/ (made here by benchmarks/gpu_wheels.sh) with `pip install --no-index --target`
# into a folder put on PYTHONPATH, then run the check, logging to $OUT/gpu_check.log next to its JSON and table.
# Arguments are passed to gpu_check.py (e.g. --only lpips fit_gan_64, --budget-s 300).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="${WHEEL_DIR:-$ROOT/.whl}"
SITE="${SITE_DIR:-/tmp/autolabel_site}"
OUT_DIR="${OUT:-$ROOT/benchmarks/out/gpu_check}"
mkdir -p "$OUT_DIR"

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || { echo "gpu_check.sh: installing the wheels in $WHEELS failed; rerun benchmarks/gpu_wheels.sh" >&2; exit 1; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu_check.sh: no wheels in $WHEELS (run benchmarks/gpu_wheels.sh where pip works, carry .whl); using what is installed" >&2
fi
export PYTHONPATH="$ROOT/platform:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2> /dev/null || true
"$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
