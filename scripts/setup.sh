#!/usr/bin/env bash
# Creates .venv (once) and installs rawnet2-jax with its pinned dependencies from this
# repository's own files: pyproject.toml (what we need) and requirements.lock (exact versions
# known to work together). torch is pinned to 2.13.0 (CPU is enough; it is only used for
# checkpoint conversion and the parity tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.rawnet2-installed"
if [[ -f "$stamp" && "$stamp" -nt pyproject.toml && "$stamp" -nt requirements.lock ]]; then
  exit 0
fi
echo "[setup] creating $VENV and installing dependencies (about a minute)..."
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c requirements.lock -e '.[test]'
touch "$stamp"
echo "[setup] done: $("$VENV/bin/python" -c 'import jax, flax, torch; print("jax", jax.__version__, "flax", flax.__version__, "torch", torch.__version__)')"
