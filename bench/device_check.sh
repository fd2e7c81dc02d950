#!/usr/bin/env bash
# The prepared accelerator check (see bench/device_check.py and bench/README.md).
#
#   bench/device_check.sh                 # on the GPU: about 7 minutes, fits one 8-minute call
#   bench/device_check.sh --smoke         # same code, tiny models, CPU only (a minute or two)
#   bench/device_check.sh --out-dir DIR   # where the JSON and markdown go (default bench/results)
#
# Needs jax, flax, optax, orbax and numpy; torch for the PyTorch comparison, grain and soundfile
# for the input-pipeline row (each part is skipped, with the reason, when its package is missing).
# PY picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX would otherwise take 75 % of the GPU up front: the torch part shares the device, and the
# peak-memory column should show what the step needs.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [[ " $* " == *" --smoke "* ]]; then
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
fi
echo "== device check $(date -u '+%F %T') UTC on $(hostname); $("$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>&1 | tail -1)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" bench/device_check.py "$@"
