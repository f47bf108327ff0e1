#!/usr/bin/env bash
# GPU check: installs nothing. Runs the CUDA tests and the speed and quality benchmarks on the GPU
# and prints short tables. Usage (from the repository root, in an environment where dfplan and
# pytest are installed): bash benchmarks/gpu_check.sh   (results of the main job go to $OUT or /tmp)
set -uo pipefail
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
echo "== CUDA tests (tests/test_cuda.py: model, planner, policy, shipped checkpoints, bf16 training) =="
pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15
echo "== planner decision rate on CUDA (maze2d-large): warm vs full replanning, MCG 1/4/16 =="
python3 -m dfplan.benchmarks.planner_speed --task maze2d-large --device cuda --batches 1 32 100 --min-seconds 1
echo "== shipped planners on CUDA (single-env and batch-100 decision rate) =="
python3 -m dfplan.benchmarks.planner_speed --task maze2d-umaze --device cuda --only-shipped --batches 1 100 --min-seconds 1
python3 -m dfplan.benchmarks.planner_speed --task maze2d-large --device cuda --only-shipped --batches 1 100 --min-seconds 1
echo "== training throughput on CUDA (maze2d-large config, bf16 autocast) =="
python3 -m dfplan.benchmarks.train_throughput --task maze2d-large --device cuda 2>&1 | tail -6
echo "== quality: the main job on CUDA (maze2d-large, 100 episodes, seeds 0..99) =="
timeout 240 python3 -m dfplan bench maze2d-large --device cuda \
    --out "${OUT:-/tmp}/gpu_check_results" 2>&1 | tail -8
echo "== long rollouts on CUDA (10x the training window) =="
timeout 120 python3 -m lab.long_rollout --task maze2d-umaze --device cuda --samples 16 2>&1 | tail -13
