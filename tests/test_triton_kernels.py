"""Every variant of the Triton kernels under the interpreter, against the float64 reference, with poisoned
outputs and bitwise reruns: the forward through pointers and through tensor descriptors (TMA on sm_90+), with
contiguous and gathered positions, the epilogue whole and in 2 or 4 column slices, a persistent grid of fewer
programs than items, vocab splits; the backward with G in blocks of positions and in blocks of vocabulary
rows, several blocks each; transposed (column-major) hidden and head. Shapes are odd (V = 531, D not a
multiple of the tiles) and small: the interpreter runs every program in Python. Also how the launches reach
the GPU: the tensors' device, and the backward's GEMMs on every torch version."""

import importlib
import os
from dataclasses import replace

import pytest
import torch

import endokernel._core.alloc
from endokernel._core.transform import LogitTransform
from endokernel.backends import reference
from endokernel.backends.triton import forward as triton_forward
from endokernel.backends.triton import tuning
from endokernel.backends.triton.backward import backward as triton_backward
from endokernel.backends.triton.backward import choose_blocks
from endokernel.backends.triton.configs import KernelConfig
from endokernel.backends.triton.runtime import Launch, contiguous_row_start

from cases import TOLERANCE, fresh_seed, relative_error

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# the module (the package's ``backward`` attribute is the function of that name)
backward_module = importlib.import_module("endokernel.backends.triton.backward")


def make_inputs(*, dtype=torch.float32, num_positions=23, rows_total=40, vocab=531, dim=44, gathered=True,
                bias=True, logit_scale=1.3, softcap=6.0, temperature=0.7):
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows_total, dim, generator=g).to(dtype)
    weight = (torch.randn(vocab, dim, generator=g) * 3 / dim**0.5).to(dtype)
    if gathered:
        rows = torch.randperm(rows_total, generator=g)[:num_positions]
    else:
        rows = torch.arange(3, 3 + num_positions)
    targets = torch.randint(-1, vocab, (num_positions,), generator=g)
    transform = LogitTransform(temperature=temperature, bias=torch.randn(vocab, generator=g) if bias else None,
                               logit_scale=logit_scale, softcap=softcap)
    return seed, (hidden, weight, rows, targets, transform)


def to64(inputs):
    hidden, weight, rows, targets, transform = inputs
    bias = None if transform.bias is None else transform.bias.double()
    return hidden.double(), weight.double(), rows, targets, replace(transform, bias=bias)


def forward(fn, inputs, **kwargs):
    n = inputs[2].numel()
    outs = [endokernel._core.alloc.new_empty(n, dtype=torch.float32, device=inputs[0].device) for _ in range(3)]
    fn(*inputs, *outs, **kwargs)
    return outs


def expected_forward(inputs):
    hidden, weight, rows, targets, transform = to64(inputs)
    outs = [torch.empty(rows.numel(), dtype=torch.float64) for _ in range(3)]
    reference.chosen_and_lse(hidden, weight, rows, targets, transform, *outs)
    return outs


FORWARD_VARIANTS = {  # name -> (config, dtype, dim, gathered positions, vocab splits)
    "pointers, gathered, 3 splits": (KernelConfig(16, 64, 16), torch.float32, 44, True, 3),
    "pointers, slices of 2": (KernelConfig(16, 64, 32, epilogue_split=2), torch.bfloat16, 37, False, None),
    "pointers, slices of 4, group 1": (KernelConfig(16, 64, 16, epilogue_split=4, group_t=1), torch.float32, 37,
                                       True, 2),
    "descriptors, contiguous": (KernelConfig(16, 64, 16, tma=True), torch.float32, 44, False, 3),
    "descriptors, gathered, slices of 4": (KernelConfig(32, 128, 32, tma=True, epilogue_split=4), torch.bfloat16,
                                           40, True, None),
    "descriptors, fp16, slices of 2": (KernelConfig(16, 64, 16, tma=True, epilogue_split=2), torch.float16, 40,
                                       False, 5),
}


@pytest.mark.parametrize("name", FORWARD_VARIANTS)
def test_forward_variant_matches_reference(name):
    config, dtype, dim, gathered, splits = FORWARD_VARIANTS[name]
    seed, inputs = make_inputs(dtype=dtype, dim=dim, gathered=gathered)
    got = forward(triton_forward.chosen_and_lse, inputs, config=config, num_splits=splits)
    want = expected_forward(inputs)
    # bf16 dots run in fp32 on the interpreter; its fp16 dots round to fp16
    tolerance = TOLERANCE[torch.float16] if dtype == torch.float16 else 1e-5
    for label, a, b in zip(("chosen", "lse", "entropy"), got, want):
        assert relative_error(a, b) <= tolerance, f"seed {seed}: {label}"
    assert not got[0][inputs[3] < 0].any(), f"seed {seed}: chosen logit of 'no target' is not 0"
    again = forward(triton_forward.chosen_and_lse, inputs, config=config, num_splits=splits)
    assert all(torch.equal(a, b) for a, b in zip(got, again)), "not bitwise reproducible"


def test_descriptors_where_layout_allows():
    """Descriptors need 16-byte aligned rows: D = 40 bf16 gets them for hidden and the head, D = 37 neither, a
    gathered set of positions only the head; the persistent grid is capped by the multiprocessors."""
    config = KernelConfig(16, 64, 16, tma=True)
    for dim, gathered, expect in ((40, False, (True, True)), (37, False, (False, False)), (40, True, (False, True))):
        _, inputs = make_inputs(dtype=torch.bfloat16, dim=dim, gathered=gathered)
        row_start = contiguous_row_start(inputs[2])
        assert (row_start is None) == gathered
        n = inputs[2].numel()
        stats, _ = triton_forward.plan(*inputs, torch.empty(n), torch.empty(n), None, config=config, target=None,
                                       multiprocessors=2, row_start=row_start)
        assert (stats.meta["H_DESC"], stats.meta["W_DESC"]) == expect, (dim, gathered)
        assert stats.grid == (2,)  # 2 programs, each looping over several (token tile, split) items


def test_knobs_that_keep_the_bits():
    """block_t, group_t, programs_per_sm, tma and num_warps leave every output bit unchanged (configs.py). Under
    the interpreter a tile's dot is the host BLAS's matmul, whose rounding of a row may depend on the tile's row
    count (seen with an AVX2-only EPYC's numpy): block_t is held to float32 rounding there, bits elsewhere."""
    seed, inputs = make_inputs(dim=40, gathered=False)
    base = KernelConfig(16, 64, 16)
    want = forward(triton_forward.chosen_and_lse, inputs, config=base, num_splits=3)
    for config in (replace(base, block_t=32), replace(base, group_t=1), replace(base, programs_per_sm=3),
                   replace(base, tma=True), replace(base, num_warps=8)):
        got = forward(triton_forward.chosen_and_lse, inputs, config=config, num_splits=3)
        if config.block_t != base.block_t and INTERPRETED:
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=f"seed {seed}: {config}")
            continue
        assert all(torch.equal(a, b) for a, b in zip(got, want)), f"seed {seed}: {config} changed the bits"


def backward_inputs(inputs, seed):
    """(lse, entropy, grad_chosen, grad_lse, grad_entropy): the statistics in fp32 and random upstream grads."""
    _, lse, entropy = expected_forward(inputs)
    g = torch.Generator().manual_seed(seed + 1)
    n = lse.numel()
    return lse.float(), entropy.float(), *(torch.randn(n, generator=g) for _ in range(3))


BACKWARD_VARIANTS = {  # name -> (config, dtype, dim, positions, vocab, gathered, budget bytes, expected axis)
    "positions, pointers, gathered": (KernelConfig(16, 64, 16), torch.float32, 37, 70, 67, True, 9000, "positions"),
    "positions, descriptors, slices of 2": (KernelConfig(16, 64, 16, tma=True, epilogue_split=2), torch.bfloat16,
                                            40, 70, 67, False, 5000, "positions"),
    "vocab rows, descriptors": (KernelConfig(16, 64, 16, tma=True), torch.bfloat16, 40, 23, 531, False, 9000,
                                "vocab"),
    "vocab rows, pointers, gathered": (KernelConfig(16, 64, 32), torch.float32, 44, 23, 531, True, 20000, "vocab"),
    "positions, pointers, slices of 4": (KernelConfig(16, 64, 16, epilogue_split=4), torch.bfloat16, 37, 70, 67,
                                         True, 9000, "positions"),
}


@pytest.mark.parametrize("name", BACKWARD_VARIANTS)
def test_backward_variant_matches_reference(name):
    config, dtype, dim, positions, vocab, gathered, budget, axis = BACKWARD_VARIANTS[name]
    seed, inputs = make_inputs(dtype=dtype, dim=dim, num_positions=positions, rows_total=positions + 9, vocab=vocab,
                               gathered=gathered)
    blocks = triton_backward_blocks(inputs, config, budget)
    assert blocks.axis == axis and blocks.size < (positions if axis == "positions" else vocab), blocks
    stats = backward_inputs(inputs, seed)
    needs = (True, True, True)
    got = triton_backward(*inputs, *stats, needs, config=config, workspace_bytes=budget)
    want = reference.backward(*to64(inputs), None, None, *(s.double() for s in stats[2:]), needs)
    for label, a, b in zip(("hidden", "weight", "bias"), got, want):
        assert a.dtype == torch.float32
        assert relative_error(a, b) <= (1e-4 if dtype == torch.float32 else 3e-2), f"seed {seed}: d{label}"
    again = triton_backward(*inputs, *stats, needs, config=config, workspace_bytes=budget)
    assert all(torch.equal(a, b) for a, b in zip(got, again)), "backward not bitwise reproducible"


def triton_backward_blocks(inputs, config, budget):
    hidden, weight, rows, _, _ = inputs
    return choose_blocks(rows.numel(), weight.shape[0], weight.shape[1], hidden.element_size(), config.block_t,
                         config.block_v, budget, gathered=contiguous_row_start(rows) is None)


def test_backward_of_some_gradients_only():
    """Only the bias, only hidden: the other gradients are None and the kernel skips their GEMMs."""
    seed, inputs = make_inputs(num_positions=19, dim=37)
    stats = backward_inputs(inputs, seed)
    want = reference.backward(*to64(inputs), None, None, *(s.double() for s in stats[2:]), (True, True, True))
    for needs in ((False, False, True), (True, False, False)):
        got = triton_backward(*inputs, *stats, needs, config=KernelConfig(16, 64, 16))
        for need, a, b in zip(needs, got, want):
            assert (a is None) != need
            if need:
                assert relative_error(a, b) <= 1e-4, f"seed {seed}"


@pytest.mark.parametrize("split", [1, 2, 4])
def test_epilogue_takes_the_configs_column_slices(split, monkeypatch):
    """Both kernels run their epilogue on ``epilogue_split`` column slices of each logits tile (BLOCK_V / split
    columns each): the backward's G epilogue once took 4 as 1."""
    widths = {"forward": [], "backward": []}

    def recording(kind, epilogue):
        def record(tile, *args):
            widths[kind].append(int(tile.shape[1]))
            return epilogue(tile, *args)
        return record

    monkeypatch.setattr(triton_forward, "_fold", recording("forward", triton_forward._fold))
    monkeypatch.setattr(backward_module, "_store_grad", recording("backward", backward_module._store_grad))
    config = KernelConfig(16, 64, 16, epilogue_split=split)
    seed, inputs = make_inputs(num_positions=17, vocab=131, dim=20)
    forward(triton_forward.chosen_and_lse, inputs, config=config, num_splits=1)
    stats = backward_inputs(inputs, seed)
    got = triton_backward(*inputs, *stats, (True, False, False), config=config)
    tiles = 2 * 3  # (17 positions / 16) x (131 vocab rows / 64), one block of G
    assert widths["forward"] == [64 // split] * split * tiles
    assert widths["backward"] == [64 // split] * split * tiles
    want = reference.backward(*to64(inputs), None, None, *(s.double() for s in stats[2:]), (True, False, False))
    assert relative_error(got[0], want[0]) <= 1e-4, f"seed {seed}"


def test_transposed_hidden_and_head_match_reference():
    """Column-major hidden and head (strides (1, rows)): pointer loads with a stride along D in the statistics
    kernel, the split merge's chosen-logit dot and the backward's G kernel (their 64-bit offsets are checked in
    the compile report's Triton IR, tests/test_triton_report.py)."""
    seed, inputs = make_inputs(dim=40, gathered=False)
    hidden, weight, rows, targets, transform = inputs
    transposed = (hidden.t().contiguous().t(), weight.t().contiguous().t(), rows, targets, transform)
    assert transposed[0].stride() == (1, hidden.shape[0]) and transposed[1].stride() == (1, weight.shape[0])
    config = KernelConfig(16, 64, 16, tma=True)  # descriptors asked for, pointers taken: D is not unit-stride
    got = forward(triton_forward.chosen_and_lse, transposed, config=config, num_splits=3)
    for label, a, b in zip(("chosen", "lse", "entropy"), got, expected_forward(inputs)):
        assert relative_error(a, b) <= 1e-5, f"seed {seed}: {label}"
    stats = backward_inputs(inputs, seed)
    needs = (True, True, True)
    got = triton_backward(*transposed, *stats, needs, config=config, workspace_bytes=5000)
    want = reference.backward(*to64(inputs), None, None, *(s.double() for s in stats[2:]), needs)
    for label, a, b in zip(("hidden", "weight", "bias"), got, want):
        assert relative_error(a, b) <= 1e-4, f"seed {seed}: d{label}"


class FakeCudaDevice:
    """Stands in for ``torch.cuda.device`` (no GPU here): makes ``device`` "current" while entered."""

    current = None

    def __init__(self, device):
        self.device = torch.device(device)

    def __enter__(self):
        self.saved, FakeCudaDevice.current = FakeCudaDevice.current, self.device

    def __exit__(self, *exc):
        FakeCudaDevice.current = self.saved


def test_launches_run_on_the_tensors_device(monkeypatch):
    """Triton launches on the current CUDA device and stream: a launch for tensors on cuda:1 makes cuda:1
    current (a model on cuda:1 while cuda:0 is current), and so does the autotuner's timing."""
    monkeypatch.setattr(torch.cuda, "device", FakeCudaDevice)
    launched = []

    class Kernel:  # records the device that is current when the kernel launches
        def __getitem__(self, grid):
            return lambda *args, **meta: launched.append(FakeCudaDevice.current)

    gpu = torch.device("cuda", 1)
    Launch(Kernel(), (1,), (), {}).run(gpu)
    assert launched == [gpu] and FakeCudaDevice.current is None

    import triton.testing

    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kwargs: launched.append(FakeCudaDevice.current) or 1)
    tuning._seconds([Launch(Kernel(), (1,), (), {})], gpu)
    assert launched == [gpu, gpu]


@pytest.mark.parametrize("version, path", [("2.4.1", "upcast"), ("2.9.1+cu128", "upcast"), ("2.10.0a0+git", "upcast"),
                                           ("2.10.0", "out_dtype"), ("2.11.0+cu130", "out_dtype")])
def test_backward_gemms_fall_back_where_torch_lacks_an_fp32_output_gemm(version, path, monkeypatch):
    """bf16 / fp16 operands with an fp32 ``self`` and ``out_dtype``: torch >= 2.10 only (pyproject allows 2.4);
    older torch upcasts the operands a slice at a time, on CUDA as on CPU."""
    monkeypatch.setattr(torch, "__version__", version)
    assert backward_module.gemm_path(torch.bfloat16, torch.device("cuda", 0)) == path
    assert backward_module.gemm_path(torch.float16, torch.device("cuda")) == path
    assert backward_module.gemm_path(torch.float32, torch.device("cuda")) == "fp32"
    assert backward_module.gemm_path(torch.bfloat16, torch.device("cpu")) == "upcast"


def test_upcast_gemm_accumulates_in_fp32_in_slices(monkeypatch):
    """The fallback's fp32 copies are bounded (here to a 7-column slice of the inner dimension, 10 slices), and
    it writes ``a @ b`` over NaN (beta 0) or adds it, with the products exact and fp32 sums."""
    monkeypatch.setattr(backward_module, "UPCAST_SLICE_BYTES", 4 * (9 + 5) * 7)
    g = torch.Generator().manual_seed(fresh_seed())
    a, b = torch.randn(9, 67, generator=g).bfloat16(), torch.randn(67, 5, generator=g).bfloat16()
    want = a.double() @ b.double()
    out = torch.full((9, 5), float("nan"))
    calls = []
    addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *args, **kwargs: calls.append(args[1].shape) or addmm(*args, **kwargs))
    backward_module.matmul_into(out, a, b, accumulate=False)
    assert len(calls) == 10 and calls[0] == (9, 7) and calls[-1] == (9, 4)
    assert relative_error(out, want) <= 1e-6
    backward_module.matmul_into(out, a, b, accumulate=True)
    assert relative_error(out, 2 * want) <= 1e-6
