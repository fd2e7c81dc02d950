#!/usr/bin/env bash
# The demo preset trained by N processes on this machine, the way several hosts would run it:
#   scripts/multihost_local.sh N [more `python -m train` flags, e.g. --epochs 1 --no-final-eval]
# Each process gets one CPU device and talks to the others through gloo over 127.0.0.1
# (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, as on plain GPU hosts).
# All processes share one workdir (MH_RUN, default runs/demo_mh<N>); the primary (process 0)
# prints the run's lines, every process's output is also kept in MH_RUN/process-<i>.log.
# Ctrl-C or SIGTERM is passed to every process: they save one checkpoint together and stop;
# re-running the same command resumes. The demo's global batch (16) and eval batch (16) must
# divide by N (N = 1, 2, 4, 8, 16 or pass --batch-size/--eval-batch-size).
# MH_PYTHON=/path/to/python (default .venv/bin/python), MH_PORT (default: a free port),
# RAWNET2_DISTRIBUTED_TIMEOUT=seconds (default 300): how long a missing peer is waited for.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:?usage: scripts/multihost_local.sh N [train flags]}
shift
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: N must be a positive number of processes, got '$N'" >&2
  exit 2
fi
PY=${MH_PYTHON:-.venv/bin/python}
OUT=${DEMO_OUT:-demo_out}
RUN=${MH_RUN:-runs/demo_mh$N}
DEMO_OUT="$OUT" DEMO_PYTHON="$PY" DEMO_ONLY_DATA=1 bash scripts/demo.sh  # corpus + dataset, reused when complete
PORT=${MH_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$RUN"
echo "==> $N processes, coordinator 127.0.0.1:$PORT, workdir $RUN"
pids=()
for ((i = 0; i < N; i++)); do
  (
    export RAWNET2_DISTRIBUTED=1 JAX_PLATFORMS=cpu JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" \
      JAX_NUM_PROCESSES="$N" JAX_PROCESS_ID="$i"
    cmd=("$PY" -m train --config demo --data-dir "$OUT/tfds" --asv-scores "$OUT" --workdir "$RUN" "$@")
    # exec: the process's PID is the one signals are forwarded to (tee runs beside it)
    if ((i == 0)); then exec "${cmd[@]}" > >(tee "$RUN/process-$i.log") 2>&1; else exec "${cmd[@]}" > "$RUN/process-$i.log" 2>&1; fi
  ) &
  pids+=($!)
done
forward() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap forward INT TERM
status=0
for ((i = 0; i < N; i++)); do
  rc=0
  # `wait` returns early when a trapped signal arrives: wait again until the process is gone.
  while true; do
    wait "${pids[$i]}" && rc=0 || rc=$?
    kill -0 "${pids[$i]}" 2>/dev/null || break
  done
  if ((rc != 0)); then
    echo "process $i exited with status $rc (see $RUN/process-$i.log)" >&2
    ((status == 0)) && status=$rc
  fi
done
exit $status
