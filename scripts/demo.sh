#!/usr/bin/env bash
# The main job on the bundled demo data, end to end, in minutes on a laptop CPU:
#   1. write the synthetic demo corpus in the ASVspoof 2019 LA layout
#   2. build its TFDS dataset (array_record, no TensorFlow)
#   3. train the `demo` preset (model selection on dev)
#   4. evaluate the best model once on eval: pooled + per-attack EER and min t-DCF, DET plot
#   5. score a few audio files
#   6. convert a PyTorch reference checkpoint with --verify parity output
# Every step is a plain command you can run yourself; they are echoed as they run.
# Re-running resumes training where it stopped and reuses the corpus and dataset when they are
# complete (an interrupted corpus or dataset build is redone).
# DEMO_PYTHON=/path/to/python uses that interpreter instead of setting up .venv;
# DEMO_ONLY_DATA=1 stops after the corpus and the dataset; DEMO_CORPUS_ARGS adds options to
# `python -m rawnet2_jax.data demo` (a smaller corpus: "--num-train 100 --num-dev 60").
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${DEMO_PYTHON:-}" ]]; then
  bash scripts/setup.sh
fi
# Let glibc back large allocations with huge pages: faster XLA on CPU (see bench/README.md).
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
PY=${DEMO_PYTHON:-.venv/bin/python}
if [[ -n "${DEMO_PYTHON:-}" ]]; then CLI=("$PY" -m rawnet2_jax.cli); else CLI=(.venv/bin/rawnet2-jax); fi
OUT=${DEMO_OUT:-demo_out}
RUN=${DEMO_RUN:-runs/demo}
start=$(date +%s)

step() { echo; echo "==> $*"; "$@"; }

# The eval ASV score file is the last file the corpus writer writes.
if [[ ! -s "$OUT/LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt" ]]; then
  # shellcheck disable=SC2086  # DEMO_CORPUS_ARGS: extra options, e.g. "--num-train 100"
  step $PY -m rawnet2_jax.data demo "$OUT" ${DEMO_CORPUS_ARGS:-}
fi
# TFDS renames a finished build to DATASET/VERSION/ with its dataset_info.json inside; a folder
# without it (or only incomplete.* folders) is an interrupted build.
if ! compgen -G "$OUT/tfds/asvspoof2019_la/[0-9]*/dataset_info.json" > /dev/null; then
  step $PY -m rawnet2_jax.data build asvspoof2019_la --manual-dir "$OUT" --data-dir "$OUT/tfds" --overwrite
fi
if [[ -n "${DEMO_ONLY_DATA:-}" ]]; then
  echo "corpus $OUT/LA and dataset $OUT/tfds/asvspoof2019_la are ready (DEMO_ONLY_DATA)"
  exit 0
fi
step $PY -m train --config demo --data-dir "$OUT/tfds" --asv-scores "$OUT" --workdir "$RUN" --no-final-eval
step "${CLI[@]}" evaluate --checkpoint "$RUN/best_model" --split eval --data-dir "$OUT/tfds" \
  --asv-scores "$OUT/LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt" \
  --out "$RUN/eval"
mapfile -t some < <(ls "$OUT"/LA/ASVspoof2019_LA_eval/flac/*.flac | head -n 6)
step "${CLI[@]}" score --checkpoint "$RUN/best_model" "${some[@]}"
step $PY -m convert.example "$OUT/example_best.pt" --preset caa_rawnet2
step $PY -m convert "$OUT/example_best.pt" "$OUT/converted_caa_rawnet2" --verify --force

echo
echo "Demo finished in $(( $(date +%s) - start )) s. Results:"
echo "  corpus (ASVspoof 2019 LA layout) $OUT/LA"
echo "  TFDS dataset                     $OUT/tfds/asvspoof2019_la"
echo "  checkpoints, metrics.jsonl       $RUN"
echo "  learning curves                  $RUN/learning_curves.png"
echo "  eval scores, tables, DET plot    $RUN/eval"
echo "  converted reference checkpoint   $OUT/converted_caa_rawnet2"
