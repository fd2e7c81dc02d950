#!/usr/bin/env bash
# Every benchmark, on a QUIET machine (nothing else running: timings on a busy one are noise).
#
#   bench/run_all.sh            # full run (about 1-2 hours on 2 cores, see bench/README.md)
#   bench/run_all.sh --quick    # tiny models / short pipeline run: checks that everything runs
#   bench/run_all.sh [--quick] -- --presets caa_rawnet2 --variants jax@thp,torch@thp
#                               # anything after "--" goes to bench_model.py
#
# Writes bench/results/: bench_pipeline[_quick].json, bench_memory[_quick].json,
# bench_model[_quick].{json,md} (the .md is the table for the README, pipeline included).
# The GPU check is separate: bench/device_check.sh (one accelerator call, see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
QUICK=""
if [[ "${1:-}" == "--quick" ]]; then QUICK="--quick"; shift; fi
if [[ "${1:-}" == "--" ]]; then shift; fi
SUFFIX=${QUICK:+_quick}
mkdir -p bench/results
echo "== $(date -u '+%F %T') UTC, load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"

PIPE_JSON=bench/results/bench_pipeline${SUFFIX}.json
if [[ -f bench/bench_pipeline.py ]]; then
  echo "== input pipeline"
  if [[ -n "$QUICK" ]]; then
    "$PY" bench/bench_pipeline.py --num-utts 64 --seconds 1 --batch-size 8 \
      --work-dir /tmp/rawnet2_bench_quick --json "$PIPE_JSON" || echo "bench_pipeline.py failed (continuing)"
  else
    "$PY" bench/bench_pipeline.py --json "$PIPE_JSON" || echo "bench_pipeline.py failed (continuing)"
  fi
fi

echo "== train-step memory with and without remat (bench/bench_memory.py)"
if [[ -n "$QUICK" ]]; then
  "$PY" bench/bench_memory.py --quick --json bench/results/bench_memory_quick.json || echo "bench_memory.py failed (continuing)"
else
  "$PY" bench/bench_memory.py --json bench/results/bench_memory.json || echo "bench_memory.py failed (continuing)"
fi

echo "== model: rawnet2-jax vs PyTorch"
"$PY" bench/bench_model.py $QUICK --pipeline-json "$PIPE_JSON" "$@"
