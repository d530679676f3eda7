"""The core issue's CPU speed target (README, Performance), as a preset of ``endokernel bench``: bf16 inputs,
N=2048, D=1024, V=151936, three repeats interleaved, against the matmul floor and F.linear_cross_entropy.

    python bench/cpu_speed_target.py [more endokernel bench options, e.g. --repeats 5]
"""

import sys

from endokernel.cli import main

if __name__ == "__main__":
    main(["bench", "--device", "cpu", "--shapes", "1024:151936", "--tokens", "2048", "--dtypes", "bfloat16",
          "--methods", "floor,floor-input-dtype,torch,linear_ce,linear_ce-chunked", "--repeats", "3",
          "--time-budget", "1e9", "--no-e2e", *sys.argv[1:]])
