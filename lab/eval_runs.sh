#!/usr/bin/env bash
# Score training runs on tuning seeds (never the reported 0..99): maze2d-large seeds 2000..2031,
# 32 episodes, the goal-conditioned planner without reward guidance.
#   bash lab/eval_runs.sh OUT_DIR RUN_DIR [RUN_DIR ...]      (each RUN_DIR holds latest.*)
# Extra planner settings: PLANNER="refresh_rows=5 goal_weight=2" bash lab/eval_runs.sh ...
set -euo pipefail
out=${1:?usage: eval_runs.sh OUT_DIR RUN_DIR...}
shift
base="sampling_steps=10 uncertainty=1 refresh_rows=3 horizon_tokens=0 goal_weight=1
      guidance_scale=0 mcg_samples=1 warm_candidates=1 carry_x0=false guidance_clip=0"
for run in "$@"; do
  label=$(basename "$run")${LABEL:+-$LABEL}
  # shellcheck disable=SC2086
  dfplan bench "${TASK:-maze2d-large}" --checkpoint "$run/latest" --seed 2000 --episodes 32 \
    --batch-size 32 --label "$label" --out "$out" --planner $base ${PLANNER:-}
done
