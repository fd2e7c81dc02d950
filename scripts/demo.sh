#!/usr/bin/env bash
# The main job on the bundled demo data, end to end, in minutes on a laptop CPU:
#   1. write the synthetic demo corpus in the ASVspoof 2019 LA layout
#   2. build its TFDS dataset (array_record, no TensorFlow)
#   3. train the `demo` preset (model selection on dev)
#   4. evaluate the best model once on eval: pooled + per-attack EER and min t-DCF, DET plot
#   5. score a few audio files
#   6. convert a PyTorch reference checkpoint with --verify parity output
# Every step is a plain command you can run yourself; they are echoed as they run.
# Re-running resumes training where it stopped and reuses the corpus and dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Let glibc back large allocations with huge pages: faster XLA on CPU (see bench/README.md).
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}
PY=.venv/bin/python
OUT=${DEMO_OUT:-demo_out}
RUN=${DEMO_RUN:-runs/demo}
start=$(date +%s)

step() { echo; echo "==> $*"; "$@"; }

if [[ ! -f "$OUT/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt" ]]; then
  step $PY -m rawnet2_jax.data demo "$OUT"
fi
if [[ ! -d "$OUT/tfds/asvspoof2019_la" ]]; then
  step $PY -m rawnet2_jax.data build asvspoof2019_la --manual-dir "$OUT" --data-dir "$OUT/tfds"
fi
step $PY -m train --config demo --data-dir "$OUT/tfds" --asv-scores "$OUT" --workdir "$RUN" --no-final-eval
step .venv/bin/rawnet2-jax evaluate --checkpoint "$RUN/best_model" --split eval --data-dir "$OUT/tfds" \
  --asv-scores "$OUT/LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt" \
  --out "$RUN/eval"
mapfile -t some < <(ls "$OUT"/LA/ASVspoof2019_LA_eval/flac/*.flac | head -n 6)
step .venv/bin/rawnet2-jax score --checkpoint "$RUN/best_model" "${some[@]}"
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
