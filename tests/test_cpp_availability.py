"""The C++ kernels are optional: disabled (or not built), the package imports quietly, reports it, names the
reason on backend='cpp', and 'auto' still works. Runs with or without the extension."""

import os
import subprocess
import sys

import pytest

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



def test_the_variant_follows_the_cpu_and_the_variable():
    from endokernel.backends.cpp.loader import choose

    every = ("avx512", "avx2", "default")
    assert choose(None, "AVX512", every) == ("avx512", "")
    assert choose(None, "AVX2", every) == ("avx2", "")  # never a variant the CPU cannot run
    assert choose(None, "DEFAULT", every) == ("default", "")
    assert choose(None, "SVE256", ("default",)) == ("default", "")  # other architectures: the portable one
    assert choose(None, "AVX512", ("default", "avx2")) == ("avx2", "")  # the best of those built
    assert choose("AVX2", "AVX512", every) == ("avx2", "")
    isa, why = choose("avx512", "AVX2", every)
    assert isa is None and "ENDOKERNEL_CPU_ISA=avx512: this CPU cannot run the avx512 variant" in why
    isa, why = choose("avx2", "AVX512", ("default",))
    assert isa is None and "the avx2 variant is not built (built: default)" in why
    assert choose("sse9", "AVX512", every)[0] is None and "no variant 'sse9'" in choose("sse9", "AVX512", every)[1]
    isa, why = choose(None, "AVX2", ())
    assert isa is None and "not built" in why


VARIANT = """
import torch, endokernel
from endokernel.backends.cpp import loader
print(loader.cpp_variant(), endokernel.cpp_available())
try:
    endokernel.token_statistics(torch.randn(3, 8), torch.randn(16, 8), torch.zeros(3, dtype=torch.long), backend="cpp")
except RuntimeError as error:
    print(error)
"""


def run_variant(**env):
    done = subprocess.run([sys.executable, "-c", VARIANT], env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_each_usable_variant_runs_its_own_isa_and_the_variable_is_read_at_import():
    from endokernel.backends.cpp import loader

    if os.environ.get(loader.DISABLE_VARIABLE) == "1":
        pytest.skip(f"{loader.DISABLE_VARIABLE}=1 hides every variant")
    usable = loader.usable_variants()
    if not usable:
        pytest.skip("no C++ variant built")
    for isa in usable:  # loaded side by side in one process, each with the code of its own ISA
        assert loader.extension(isa).CPU_CAPABILITY == {"avx512": "AVX512", "avx2": "AVX2"}.get(isa, "DEFAULT")
    assert loader.cpp_variant() == usable[0] or os.environ.get(loader.ISA_VARIABLE)
    assert run_variant(ENDOKERNEL_CPU_ISA=usable[-1]).split()[:2] == [usable[-1], "True"]
    # torch's capability lowered to AVX2 stands for a CPU without AVX-512: that variant is refused, never imported
    out = run_variant(ATEN_CPU_CAPABILITY="avx2", ENDOKERNEL_CPU_ISA="avx512")
    assert out.startswith("None False") and "this CPU cannot run the avx512 variant" in out
    with pytest.raises(RuntimeError, match="no variant 'sse9'"):
        loader.extension("sse9")
