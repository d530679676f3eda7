"""The C++ backend's speed check, as a preset of ``endokernel bench``: the cpp backend against the torch
backend and the tiled matmul floor on a Qwen3 head (D=1024, V=151936), bf16 and fp32 inputs, one long batch
(N=2048) and one short sequence (N=256, latency), three repeats interleaved.

    python bench/cpp_speed.py [more endokernel bench options, e.g. --out-dir /tmp/cpp]
"""

import sys

from endokernel.cli import main

if __name__ == "__main__":
    main(["bench", "--device", "cpu", "--shapes", "1024:151936", "--tokens", "256,2048", "--dtypes",
          "bfloat16,float32", "--methods", "floor,torch,cpp", "--repeats", "3", "--time-budget", "1e9", "--no-e2e",
          *sys.argv[1:]])
