#!/usr/bin/env bash
# GPU check: installs nothing. Runs the CUDA-relevant tests and the speed benchmarks on the GPU
# and prints short tables. Usage (from the repository root, in an environment where dfplan and
# its test extras are installed): bash benchmarks/gpu_check.sh
set -uo pipefail
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
echo "== tests (CPU and GPU paths) =="
pytest -q -x tests/test_model.py tests/test_planner.py tests/test_policy.py tests/test_diffusion.py 2>&1 | tail -3
echo "== planner decision rate on CUDA (maze2d-large) =="
python -m dfplan.benchmarks.planner_speed --task maze2d-large --device cuda --batches 1 32 100 --min-seconds 3
echo "== training throughput on CUDA (maze2d-large config) =="
python -m dfplan.benchmarks.train_throughput --task maze2d-large --device cuda 2>&1 | tail -6
echo "== shipped planners on CUDA, batch 1 (single-env decision rate) =="
python -m dfplan.benchmarks.planner_speed --task maze2d-umaze --device cuda --only-shipped --batches 1 100
python -m dfplan.benchmarks.planner_speed --task maze2d-large --device cuda --only-shipped --batches 1 100
echo "== quality: the main job on CUDA (100 episodes, seeds 0..99) =="
dfplan bench maze2d-large --device cuda --out "${OUT:-/tmp}/gpu_check_results" 2>&1 | tail -3
echo "== long rollouts on CUDA (10x the training window) =="
python -m dfplan.benchmarks.long_rollout --task maze2d-umaze --device cuda --samples 16 2>&1 | tail -13
