#!/usr/bin/env bash
# One prepared GPU check for a lent device machine (under 8 minutes): install, run the gpu tests, run a GPU
# benchmark sweep (`endokernel bench --device cuda`, bf16, a time budget per call, torch.compile and the torch
# backend left out: they would not fit); logs, JSON and plots go to $OUT (default: bench/results/gpu-check).
# Usage: bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-bench/results/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  git rev-parse HEAD 2>/dev/null || true
} 2>&1 | tee "$OUT/environment.txt"
# the C++ CPU kernels are not needed here: skip their build, a minute of the budget
ENDOKERNEL_DISABLE_CPP=1 python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3
timeout 200 python3 -m pytest -m gpu tests -q -x 2>&1 | tee "$OUT/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
# the sweep writes its JSON after every case, so a timeout still leaves what was measured
timeout 240 python3 -m endokernel bench --preset gpu-check --out-dir "$OUT" 2>&1 | tee "$OUT/gpu-bench.log"
echo "gpu tests exit code: $tests_rc"
exit "$tests_rc"
