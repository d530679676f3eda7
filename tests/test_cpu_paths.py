"""Forcing the CPU code paths (``endokernel.backends.cpu_paths``): what each knob reaches, the environment
variables, bad values, and what is restored afterwards. The paths' results are checked by the parity, gradient
and property tests, which run over every forced path (tests/cases.py, tests/test_property.py)."""

import pytest
import torch

from endokernel import cpp_available, token_statistics
from endokernel.backends import cpu_choice
from endokernel.backends import cpu_paths as paths
from endokernel.backends.cpp import backend as cpp_backend

from cases import NEEDS_CPP, make_case

CPP_PATHS = paths.cpp_paths() if cpp_available() else []


def test_tile_dtype_of_bf16_inputs_is_forced_by_context_and_environment(monkeypatch):
    hidden = torch.zeros(2, 3, dtype=torch.bfloat16)
    monkeypatch.delenv(cpu_choice.TILE_DTYPE_VARIABLE, raising=False)
    for forced in (torch.bfloat16, torch.float32):
        with paths.cpu_paths(tile_dtype=forced):
            assert cpu_choice.tile_dtypes(hidden) == (torch.float32, forced)
            # other inputs multiply in their own dtype (fp16 in fp32) whatever is forced
            assert cpu_choice.cpu_matmul_dtype(torch.float16) == torch.float32
            assert cpu_choice.cpu_matmul_dtype(torch.float64) == torch.float64
    monkeypatch.setenv(cpu_choice.TILE_DTYPE_VARIABLE, "bfloat16")
    assert cpu_choice.cpu_matmul_dtype(torch.bfloat16) == torch.bfloat16
    with paths.cpu_paths(tile_dtype="float32"):  # the context wins over the environment
        assert cpu_choice.cpu_matmul_dtype(torch.bfloat16) == torch.float32
    monkeypatch.setenv(cpu_choice.TILE_DTYPE_VARIABLE, "int8")
    with pytest.raises(ValueError, match=cpu_choice.TILE_DTYPE_VARIABLE):
        cpu_choice.cpu_matmul_dtype(torch.bfloat16)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tile_dtype="float16"), "tile_dtype must be one of"),
    (dict(engine="mkl"), "engine must be one of"),
    (dict(isa="sse9"), "isa='sse9': there is no variant"),
    (dict(threads=0), "threads must be a positive int"),
    (dict(threads=True), "threads must be a positive int"),
])
def test_bad_values_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match), paths.cpu_paths(**kwargs):
        pass


def test_threads_and_forcing_are_restored_on_exit():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"), paths.cpu_paths(threads=3, engine="aten"):
        assert torch.get_num_threads() == 3 and cpu_choice.forced_engine() == "aten"
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    assert cpu_choice.forced_engine() in ("auto", "brgemm", "aten")  # the environment's, not the block's


@NEEDS_CPP
@pytest.mark.parametrize("path", CPP_PATHS, ids=lambda p: p.name)
def test_forced_path_reaches_the_kernel_call(path, monkeypatch):
    """The variant, the tile engine and the tile dtype a block forces are the ones the C++ call receives."""
    from endokernel.backends.cpp import loader

    calls = []

    class Recorder:
        def __init__(self, module):
            self.module = module

        def chosen_and_lse(self, *args):
            calls.append((self.module.CPU_CAPABILITY, args[11], args[15]))
            return self.module.chosen_and_lse(*args)

    monkeypatch.setattr(cpp_backend, "extension", lambda isa=None: Recorder(loader.extension(isa)))
    case = make_case(batch=1, seq_len=5, vocab=97, dim=16, dtype=torch.bfloat16)
    with paths.cpu_paths(isa=path.isa, engine=path.engine, tile_dtype=path.tile_dtype):
        token_statistics(case.hidden, case.weight, case.ids, backend="cpp")
    capability = {"avx512": "AVX512", "avx2": "AVX2"}.get(path.isa, "DEFAULT")
    assert calls == [(capability, path.tile_dtype, cpp_backend.ENGINES[path.engine])]


@NEEDS_CPP
def test_every_path_this_cpu_runs_is_listed():
    """``endokernel cpu`` (describe) names each path native, emulated or not run; the matrix the tests force has
    bf16 tiles on every CPU (emulated where it has no bf16 units) and both engines for fp32 tiles where brgemm runs."""
    table = paths.describe()
    names = [path.name for path in paths.cpp_paths()]
    assert any(name.endswith("bf16-aten") for name in names)
    for path in paths.cpp_paths():
        state = "native" if path.native else "emulated"
        assert f"{path.isa:>7} {path.name.split('-')[1]} tiles {path.engine:>6}: {state}" in table
