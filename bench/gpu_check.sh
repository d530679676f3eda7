#!/usr/bin/env bash
# One prepared GPU check for a lent device machine (under 8 minutes): install, the compile report on the real
# device, the GPU sweep with the same-shape bf16 matmul floor timed in the same run (every figure a ratio to
# it; Liger and Cut Cross-Entropy where installed), then the gpu tests. Logs, JSON and plots go to $OUT
# (default: bench/results/gpu-check). Each step has its own time limit, so a slow step cannot eat the others'.
# Usage: bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-bench/results/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TRITON_INTERPRET=0  # the test suite's conftest defaults it to 1 (the interpreter): compiled kernels here
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  git rev-parse HEAD 2>/dev/null || true
  uptime
} 2>&1 | tee "$OUT/environment.txt"
# the C++ CPU kernels are not needed here: skip their build, a minute of the budget
ENDOKERNEL_DISABLE_CPP=1 timeout 60 python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3

# registers, spills, shared memory, wgmma / TMA of every kernel as this machine's Triton compiles it
timeout 50 python3 -m endokernel kernels --targets device --dtypes bf16,fp32 --flags plain,all \
  --json "$OUT/kernels.json" --dump "$OUT/kernels" 2>&1 | tee "$OUT/kernels.log"
kernels_rc=${PIPESTATUS[0]}

# the shapes: N = 32768, D = 2560 and 4096, V = 151936, bf16; forward and forward + backward against
# the floor (the same-shape matmul) and the fused CE kernels; the sweep writes its JSON after every case
timeout 180 python3 -m endokernel bench --preset gpu-check --shapes 2560:151936,4096:151936 --tokens 8192,32768 \
  --methods floor,triton,triton+bwd,liger,liger+bwd,cce,cce+bwd --out-dir "$OUT" 2>&1 | tee "$OUT/gpu-bench.log"

timeout 150 python3 -m pytest -m gpu tests -q -x 2>&1 | tee "$OUT/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
echo "compile report exit code: $kernels_rc; gpu tests exit code: $tests_rc"
[ "$kernels_rc" -eq 0 ] && [ "$tests_rc" -eq 0 ]
