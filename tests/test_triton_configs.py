"""Triton configurations: the defaults per target, autotuning and its disk cache (under the interpreter, where
it times candidates by wall clock) and the candidates it skips, the backward's workspace budget and how it
splits G into blocks."""

import ast
import json

import pytest
import torch
import triton.compiler.errors
import triton.runtime.errors
from triton.backends.compiler import GPUTarget

import endokernel._core.alloc
from endokernel._core.transform import LogitTransform
from endokernel.backends import reference
from endokernel.backends.triton import configs, tuning
from endokernel.backends.triton.backward import choose_blocks, padded, workspace_budget
from endokernel.backends.triton.forward import chosen_and_lse

from cases import fresh_seed, relative_error

TARGETS = [GPUTarget("cuda", 80, 32), GPUTarget("cuda", 90, 32), GPUTarget("cuda", 100, 32),
           GPUTarget("hip", "gfx942", 64), None]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: "interpreter" if t is None else str(t.arch))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_defaults_lead_their_candidates(target, dtype):
    pairs = [(configs.forward_default(target, dtype, 4096, light),
              configs.forward_candidates(target, dtype, 4096, light)) for light in (False, True)]
    pairs.append((configs.backward_default(target, dtype, 4096), configs.backward_candidates(target, dtype, 4096)))
    for chosen, listed in pairs:
        assert listed[0] == chosen and len(set(listed)) == len(listed) > 1
        assert all(c.tma == configs.supports_tma(target) for c in listed) or target is None
        for config in listed:
            assert config.epilogue_split in (1, 2, 4) and config.block_v % config.epilogue_split == 0
            assert config.block_d >= 16  # tl.dot needs K >= 16 (Triton 3.6)
    assert configs.forward_default(target, dtype, 32).block_d <= 32


@pytest.mark.parametrize("fields", [dict(block_d=8), dict(block_v=48), dict(epilogue_split=3),
                                    dict(block_v=32, epilogue_split=4), dict(num_stages=0), dict(num_warps=6)])
def test_bad_configs_are_refused(fields):
    with pytest.raises(ValueError, match="KernelConfig"):
        configs.KernelConfig(**{**dict(block_t=16, block_v=64, block_d=16), **fields})


def stats_inputs():
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    hidden, weight = torch.randn(20, 40, generator=g), torch.randn(301, 40, generator=g) / 4
    rows, targets = torch.arange(20), torch.randint(0, 301, (20,), generator=g)
    return seed, (hidden, weight, rows, targets, LogitTransform(temperature=0.9))


def run_forward(inputs):
    outs = [endokernel._core.alloc.new_empty(20, dtype=torch.float32, device=torch.device("cpu")) for _ in range(2)]
    chosen_and_lse(*inputs, *outs)
    return outs


def test_autotuning_times_the_candidates_once_and_caches_the_winner(tmp_path, monkeypatch):
    monkeypatch.setenv("ENDOKERNEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ENDOKERNEL_AUTOTUNE", "0")
    tuning.set_autotune(True)
    timed = []

    def fake_seconds(launches, device):  # the second candidate "wins"; the launches still run
        for launch in launches:
            launch.run(device)
        timed.append(launches[0].meta["BLOCK_T"])
        return 1.0 / len(timed)

    monkeypatch.setattr(tuning, "_seconds", fake_seconds)
    try:
        seed, inputs = stats_inputs()
        first = run_forward(inputs)
        candidates = configs.forward_candidates(None, torch.float32, 40, light=True)
        assert timed == [c.block_t for c in candidates]
        cached = json.loads(tuning.cache_file().read_text())
        assert cached == {"forward-light|interpreter|fp32|D=40|V<=512": candidates[-1].as_dict()}
        second = run_forward(inputs)  # from the cache: nothing timed again
        assert len(timed) == len(candidates)
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        want = [torch.empty(20, dtype=torch.float64) for _ in range(2)]
        hidden, weight, rows, targets, transform = inputs
        reference.chosen_and_lse(hidden.double(), weight.double(), rows, targets, transform, *want)
        assert all(relative_error(a, b) <= 1e-5 for a, b in zip(first, want)), f"seed {seed}"
    finally:
        tuning.set_autotune(None)


def test_autotuning_is_off_by_default_and_follows_the_environment(monkeypatch):
    monkeypatch.delenv("ENDOKERNEL_AUTOTUNE", raising=False)
    assert not tuning.autotune_enabled()
    monkeypatch.setenv("ENDOKERNEL_AUTOTUNE", "1")
    assert tuning.autotune_enabled()
    tuning.set_autotune(False)
    try:
        assert not tuning.autotune_enabled()
    finally:
        tuning.set_autotune(None)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        tuning.set_autotune("yes")


COMPILE_FAILURES = {  # what Triton's autotuner skips a config for
    "out of shared memory": triton.runtime.errors.OutOfResources(300000, 232448, "shared memory"),
    "ptxas failed": triton.runtime.errors.PTXASError("`ptxas` failed with error code 255"),
    "static_assert": triton.compiler.errors.CompileTimeAssertionFailure(None, ast.Pass(), "BLOCK_V too small"),
}


@pytest.mark.parametrize("failure", COMPILE_FAILURES)
def test_autotuning_skips_a_candidate_that_does_not_compile(failure, tmp_path, monkeypatch):
    """A candidate that fails to compile for this GPU is not timed, as in Triton's own autotuner; the fastest
    of the others is chosen. Any other error is the caller's to see."""
    monkeypatch.setenv("ENDOKERNEL_CACHE_DIR", str(tmp_path))
    _, (hidden, weight, *_) = stats_inputs()
    default, failing, fast = (configs.KernelConfig(block_t, 64, 16) for block_t in (16, 32, 64))
    seconds = {default.block_t: 2.0, fast.block_t: 1.0}

    def timed(launches, device):
        config = launches[0]
        if config == failing:
            raise error
        return seconds[config.block_t]

    monkeypatch.setattr(tuning, "_seconds", timed)
    tuning.set_autotune(True)
    try:
        error = COMPILE_FAILURES[failure]
        assert tuning.pick("forward", hidden, weight, default, lambda: [default, failing, fast],
                           lambda config: [config]) == fast
        error = ValueError("a bug, not a candidate too large for this GPU")
        tuning.cache_file().unlink()
        with pytest.raises(ValueError, match="a bug"):
            tuning.pick("forward", hidden, weight, default, lambda: [default, failing, fast], lambda config: [config])
    finally:
        tuning.set_autotune(None)


def test_workspace_budget(monkeypatch):
    monkeypatch.delenv("ENDOKERNEL_WORKSPACE_MIB", raising=False)
    assert workspace_budget() == 512 * 2**20
    monkeypatch.setenv("ENDOKERNEL_WORKSPACE_MIB", "64")
    assert workspace_budget() == 64 * 2**20
    assert workspace_budget(1000) == 1000
    for bad in ("0", "-3", "lots", "1.5"):
        monkeypatch.setenv("ENDOKERNEL_WORKSPACE_MIB", bad)
        with pytest.raises(ValueError, match="ENDOKERNEL_WORKSPACE_MIB"):
            workspace_budget()
    with pytest.raises(ValueError, match="workspace_bytes"):
        workspace_budget(0)


def test_blocks_of_g_fit_the_budget_and_pick_the_cheaper_axis():
    budget, itemsize = 512 * 2**20, 2
    # N = 32768 < V: blocks of vocabulary rows re-read dH (N x D) rather than dW (V x D)
    blocks = choose_blocks(32768, 151936, 4096, itemsize, 128, 128, budget, gathered=False)
    assert blocks.axis == "vocab" and blocks.size % 128 == 0
    assert 32768 * padded(blocks.size, itemsize) * itemsize <= budget
    # N = 262144 > V
    blocks = choose_blocks(262144, 151936, 4096, itemsize, 128, 128, budget, gathered=True)
    assert blocks.axis == "positions" and blocks.size % 128 == 0
    assert blocks.size * (padded(151936, itemsize) + 4096) * itemsize <= budget
    # everything fits: one block of all positions
    assert choose_blocks(300, 1000, 64, itemsize, 128, 128, budget, gathered=False).size == 384
    # a budget below one tile still makes progress, one tile at a time
    assert choose_blocks(1000, 151936, 64, itemsize, 128, 128, 1, gathered=False).size == 128
