"""The C++ backend's speed check, as a preset of ``endokernel bench``: the cpp backend against the torch
backend and the tiled matmul floor on a Qwen3 head (D=1024, V=151936), bf16 and fp32 inputs, one long batch
(N=2048) and one short sequence (N=256, latency), repeats interleaved. ``--backward``: forward + backward
(gradients for hidden and the head) of both backends against the same floor, N=2048.

    python bench/cpp_speed.py [--backward] [more endokernel bench options, e.g. --out-dir /tmp/cpp]
"""

import sys

from endokernel.cli import main

PRESETS = {
    "forward": ["--tokens", "256,2048", "--methods", "floor,torch,cpp", "--repeats", "3"],
    "backward": ["--tokens", "2048", "--methods", "floor,torch+bwd,cpp+bwd", "--repeats", "5"],
}

if __name__ == "__main__":
    options = sys.argv[1:]
    preset = PRESETS["backward" if "--backward" in options else "forward"]
    options = [option for option in options if option != "--backward"]
    main(["bench", "--device", "cpu", "--shapes", "1024:151936", "--dtypes", "bfloat16,float32", *preset,
          "--time-budget", "1e9", "--no-e2e", *options])
