#!/usr/bin/env bash
# Short training sweep on maze2d-large: model size, window and batch at a fixed step budget.
# Each run trains STEPS steps (cosine decay over the run) on the generated maze2d-large dataset;
# lab/sweep_table.py prints loss and throughput per run. Run alone on the machine (it is timed).
#   MINARI_DATASETS_PATH=... bash lab/train_sweep.sh /tmp/sweep 2000
set -euo pipefail
out=${1:?usage: train_sweep.sh OUT_DIR [STEPS]}
steps=${2:-2000}
run() {
  name=$1; shift
  [ -f "$out/$name/latest.json" ] && return 0
  dfplan train maze2d-large --steps "$steps" --out "$out/$name" --no-progress --checkpoint-every "$steps" "$@"
}
run l4-e128-w300-b64 --window 300 --n-layer 4 --n-embd 128 --batch-size 64
run l4-e128-w600-b64 --window 600 --n-layer 4 --n-embd 128 --batch-size 64
run l4-e128-w300-b128 --window 300 --n-layer 4 --n-embd 128 --batch-size 128
run l6-e256-w300-b64 --window 300 --n-layer 6 --n-embd 256 --n-head 8 --batch-size 64
