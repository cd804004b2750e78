#!/usr/bin/env bash
# Download (here, with network) the pinned wheels a GPU machine's image lacks, for CPython 3.12 manylinux x86-64,
# into the git-ignored folder .whl/ (override: WHEEL_DIR=...), and fail loudly if they exceed 64 MiB -- the most one
# device call may carry. benchmarks/gpu_check.sh installs them there with `pip install --no-index --target`.
#
# The lent H200 image (Python 3.12, torch 2.11 + CUDA 13, pytorch-lightning, torch-geometric, torchmetrics, numpy,
# scipy, PyYAML, tqdm, MarkupSafe, cloudpickle, typing-extensions, packaging) has no omegaconf, lpips, faiss,
# submitit or optuna; below are those and their requirements that the image also lacks (optuna -> alembic, colorlog,
# SQLAlchemy; alembic -> Mako). omegaconf 2.4 vendors its parser (no antlr4 runtime needed).
#
# faiss: the CPU wheel. Measured 2026-12-02: faiss-gpu 1.15.1 is 135 MB (over the limit on its own); faiss-gpu-cu12
# 1.14.1.post1 is 48 MB but links libcudart.so.12 / libcublas.so.12, which a CUDA-13 image does not have (their
# nvidia-*-cu12 wheels are hundreds of MB). gpu_check.py therefore finds no faiss GPU index there and uses the exact
# torch kNN (autolabel/hilander/torch_knn.py) on the GPU, and says so in its output.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${WHEEL_DIR:-$ROOT/.whl}"
PY="${PYTHON:-python3}"
LIMIT_BYTES=$((64 * 1024 * 1024))
WHEELS=(
  omegaconf==2.4.0
  lpips==0.1.4
  faiss-cpu==1.15.1
  submitit==1.5.4
  optuna==5.1.0
  alembic==1.20.1
  Mako==1.4.3
  SQLAlchemy==2.1.9
  colorlog==6.12.0
)

mkdir -p "$DEST"
# one version of each package only: `pip install --no-index` refuses two
rm -f "$DEST"/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DEST" "${WHEELS[@]}" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

count=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' | wc -l)
if [ "$count" -ne "${#WHEELS[@]}" ]; then
  echo "gpu_wheels.sh: expected ${#WHEELS[@]} wheels in $DEST, found $count" >&2
  exit 1
fi
total=$(find "$DEST" -maxdepth 1 -type f -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
echo "gpu_wheels.sh: $count wheels, $total bytes ($((total / 1024 / 1024)) MiB) in $DEST"
if [ "$total" -gt "$LIMIT_BYTES" ]; then
  echo "gpu_wheels.sh: $total bytes exceed the 64 MiB a device call may carry; drop a wheel from WHEELS" >&2
  exit 1
fi
