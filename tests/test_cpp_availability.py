"""The C++ kernels are optional: disabled (or not built), the package imports quietly, reports it, names the
reason on backend='cpp', and 'auto' still works. Runs with or without the extension."""

import os
import subprocess
import sys

CODE = """
import warnings
warnings.simplefilter("error")  # importing must not warn
import torch, endokernel
assert not endokernel.cpp_available()
h, w, ids = torch.randn(4, 8), torch.randn(16, 8), torch.zeros(4, dtype=torch.long)
endokernel.fused_endogenous_reward(h, w, ids)
try:
    endokernel.fused_endogenous_reward(h, w, ids, backend="cpp")
except RuntimeError as error:
    print(error)
"""


def test_disabled_extension_falls_back_and_says_why():
    env = {**os.environ, "ENDOKERNEL_DISABLE_CPP": "1"}
    done = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "disabled by ENDOKERNEL_DISABLE_CPP=1" in done.stdout and "backend='torch'" in done.stdout
