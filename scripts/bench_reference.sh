#!/bin/bash
# The Transformer-step measurements (issues #13, #24) in one go, on a quiet machine, one
# program at a time:
#   REFERENCE_PYTHON=/path/to/torch-venv/bin/python REFERENCE_DIR=/path/to/export \
#     scripts/bench_reference.sh results/speed/campaign.log
# (the reference: an exported copy of github.com/hyunwoongko/transformer and a virtual
# environment with torch; see docs/performance.md). For each shape (c, b, a, and d between
# a and c) and model.dtype (DTYPES, default "float32 bfloat16"): 3 alternating rounds of the
# reference's float32 step and ours (scripts/bench_transformer.py --rounds; at (c) with the
# matmul roof). Then the kinds at (c) in both precisions (ours, 2 rounds), then the kernels
# against jax.nn's (--vs-jax). PARTS (default "shapes kinds kernels") picks the parts.
set -euo pipefail
: "${REFERENCE_PYTHON:?set REFERENCE_PYTHON to a python with torch}"
: "${REFERENCE_DIR:?set REFERENCE_DIR to an exported copy of hyunwoongko/transformer}"
OUT=${1:-results/speed/campaign.log}
PY=${PYTHON:-python}
DTYPES=${DTYPES:-float32 bfloat16}
PARTS=${PARTS:-shapes kinds kernels}
part() { [[ " $PARTS " == *" $1 "* ]]; }
REF=(--reference-python "$REFERENCE_PYTHON" --reference-dir "$REFERENCE_DIR")
log() { echo "$(date -u +%FT%TZ) $(uptime | sed 's/.*load/load/') $*"; }
mkdir -p "$(dirname "$OUT")"
{
  log "commit $(git rev-parse --short HEAD) $(git status --short | wc -l) files changed"
  part shapes && for shape in c b a d; do
    case $shape in a) steps=(--steps 4 --warmup 2);; b) steps=(--steps 20 --warmup 5);;
                   c) steps=(--steps 10 --warmup 3 --roof);; d) steps=(--steps 6 --warmup 2);; esac
    for dtype in $DTYPES; do
      log "shape $shape, ours in $dtype"
      $PY scripts/bench_transformer.py --shape $shape --dtype $dtype --rounds 3 "${steps[@]}" "${REF[@]}"
    done
  done
  part kinds && log "kinds at (c), ours" &&
    for round in 1 2; do for dtype in float32 bfloat16; do for kind in softmax l2 metric; do
      $PY scripts/bench_transformer.py --shape c --steps 6 --warmup 2 --attention $kind \
        --dtype $dtype
    done; done; done
  part kernels && log "kernels against jax.nn.dot_product_attention" &&
    $PY scripts/bench_attention.py --vs-jax 1024,2048,4096,8192 --reps 3
  log done
} > "$OUT" 2>&1
