#!/usr/bin/env bash
# Sets up .venv if needed and runs the whole test suite (parity tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two worker processes, each test file on one (its module fixtures built once): 1.7x faster on
# 2 cores, where one process mostly waits on a single-threaded XLA compile. TEST_WORKERS=0 runs
# everything in this process; later options win (`-n 0`). Files are taken in collection order
# (--no-loadscope-reorder), where conftest puts the files marked long_file first.
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
