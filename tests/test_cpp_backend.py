"""The C++ CPU backend's own settings (its parity cases, errors and gradients run with every backend's in
test_parity, test_errors and test_autograd): small tiles and blocks against the float64 reference for every
compiled ISA variant this CPU runs and both tile engines, bitwise reproducibility for 1 and 2 threads, the
backward called directly, and the logits-free memory bound."""

import sys

import pytest
import torch

from endokernel import cpp_available, token_statistics
from endokernel._core.transform import LogitTransform
from endokernel.backends import reference
from endokernel.backends.cpp import backend as cpp_backend
from endokernel.backends.cpu_paths import cpp_paths, cpu_paths

from cases import make_case, on_each_thread_count, relative_error

if not cpp_available():
    pytest.skip("endokernel's C++ extension is not built (or ENDOKERNEL_DISABLE_CPP=1)", allow_module_level=True)

MiB = 2**20


# every (variant, engine, matmul dtype) this machine can run; None: fp32 inputs' own dtype
KERNELS = [(path.isa, path.engine, None if path.tile_dtype == torch.float32 else path.tile_dtype)
           for path in cpp_paths()]
KERNEL_IDS = [path.name for path in cpp_paths()]


def kernel_outputs(hidden, weight, rows, targets, transform, dtype, **blocks):
    """(chosen, lse, entropy) of the C++ kernel called directly, outputs poisoned with NaN."""
    outs = [torch.full((rows.numel(),), float("nan"), dtype=dtype) for _ in range(3)]
    cpp_backend.chosen_and_lse(hidden, weight, rows, targets, transform, *outs, **blocks)
    return outs


@pytest.mark.parametrize("isa,engine,matmul_dtype", KERNELS, ids=KERNEL_IDS)
@pytest.mark.parametrize("softcap", [None, 4.0])
def test_small_tiles_and_entropy_match_reference(softcap, isa, engine, matmul_dtype):
    """Tiles far smaller than the sizes, none dividing them: super-blocks, token tiles and vocab tails (and an odd
    D, which bf16 brgemm pads to an even depth)."""
    case = make_case(batch=3, seq_len=13, vocab=1031, dim=37, bias=True)
    hidden = case.hidden.reshape(-1, 37)
    rows = torch.randperm(hidden.shape[0])[:31]  # a subset, out of order, as the reward layout gathers
    targets = case.ids.reshape(-1)[rows]
    targets[:4] = -1  # no target: chosen 0
    transform = LogitTransform(temperature=0.7, bias=case.kwargs["bias"], logit_scale=0.9, softcap=softcap)
    got = kernel_outputs(hidden, case.weight, rows, targets, transform, torch.float32, token_block=20, tile_tokens=4,
                         tile_vocab=37, matmul_dtype=matmul_dtype, engine=engine, isa=isa)
    ref = [torch.empty(rows.numel(), dtype=torch.float64) for _ in range(3)]
    t64 = LogitTransform(temperature=0.7, bias=case.kwargs["bias"].double(), logit_scale=0.9, softcap=softcap)
    reference.chosen_and_lse(hidden.double(), case.weight.double(), rows, targets, t64, *ref)
    tol = 1e-5 if matmul_dtype is None else 2e-2
    for name, a, b in zip(("chosen", "lse", "entropy"), got, ref):
        assert relative_error(a, b) <= tol, f"seed {case.seed}: {name}"
    assert not got[0][:4].any()


def forced(path) -> dict:
    return dict(isa=path.isa, engine=path.engine, tile_dtype=path.tile_dtype)


def inputs_dtype(path) -> torch.dtype:
    """bf16 inputs for a path with bf16 tiles (the tile dtype of bf16 inputs), else fp32."""
    return path.tile_dtype


def thread_case(path):
    """Many token tiles (N = 2 x 300 > 128, or 2 x 100 where bf16 tiles are emulated: ~30x slower) and a vocab
    tail; D past the depth at which the BLAS libraries' blocking starts to depend on the thread count
    (csrc/tile.h)."""
    seq_len, vocab = (300, 4099) if path.native else (100, 1031)
    return make_case(batch=2, seq_len=seq_len, vocab=vocab, dim=1100, bias=True, softcap=6.0,
                     dtype=inputs_dtype(path))


@pytest.mark.parametrize("path", cpp_paths(), ids=KERNEL_IDS)
def test_thread_counts_agree_bitwise(path):
    """Each position's reduction order is fixed whatever the thread count (1, 2, 3)."""
    case = thread_case(path)
    results = on_each_thread_count(lambda: token_statistics(case.hidden, case.weight, case.ids,
                                                            bias=case.kwargs["bias"], softcap=6.0, backend="cpp"),
                                   **forced(path))
    for other in results[1:]:
        assert torch.equal(results[0].chosen_logit, other.chosen_logit)
        assert torch.equal(results[0].lse, other.lse)


def test_gradients_match_reference():
    """Through autograd: the C++ forward saves the logsumexp, the C++ backward uses it (300 positions: several
    token tiles, so worker threads run matmuls)."""
    case = make_case(batch=2, seq_len=150, vocab=531, dim=40, bias=True)
    grads = []
    for backend, dtype in (("cpp", torch.float32), ("reference", torch.float64)):
        h, w, b = (t.to(dtype).requires_grad_() for t in (case.hidden, case.weight, case.kwargs["bias"]))
        stats = token_statistics(h, w, case.ids, bias=b, softcap=5.0, backend=backend)
        grads.append(torch.autograd.grad((stats.lse - 0.5 * stats.chosen_logit).sum(), (h, w, b)))
    for a, b in zip(*grads):
        assert relative_error(a, b) <= 1e-4, f"seed {case.seed}"


def backward_inputs(case, rows, targets, transform, with_entropy):
    """(hidden, weight, rows, targets, transform, lse, entropy, grad_chosen, grad_lse, grad_entropy) with the
    float64 reference's statistics and fresh random upstream gradients."""
    hidden = case.hidden.reshape(-1, case.hidden.shape[-1])
    n = rows.numel()
    stats = [torch.empty(n, dtype=torch.float64) for _ in range(3)]
    reference.chosen_and_lse(hidden.double(), case.weight.double(), rows, targets, transform, *stats)
    g = torch.Generator().manual_seed(case.seed)
    upstream = [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(3)]
    entropy, grad_entropy = (stats[2], upstream[2]) if with_entropy else (None, None)
    return hidden, case.weight, rows, targets, transform, stats[1], entropy, upstream[0], upstream[1], grad_entropy


def float64_gradients(args, matmul_dtype=None):
    """The float64 reference's gradients, from hidden and head rounded to ``matmul_dtype`` as the kernel's
    matmuls see them (what remains is the kernel's own rounding)."""
    hidden, weight, *rest = args
    if matmul_dtype is not None:
        hidden, weight = hidden.to(matmul_dtype), weight.to(matmul_dtype)
    transform = rest[2]
    rest[2] = LogitTransform(transform.temperature, transform.bias.double(), transform.logit_scale, transform.softcap)
    return reference.backward(hidden.double(), weight.double(), *rest, (True, True, True))


# bf16 matmuls: checked with softcapped logits only (see below)
BACKWARD_KERNELS = [(*kernel, softcap) for kernel in KERNELS for softcap in (None, 4.0) if softcap or kernel[2] is None]


@pytest.mark.parametrize("with_entropy", [False, True], ids=["lse", "entropy"])
@pytest.mark.parametrize("isa,engine,matmul_dtype,softcap", BACKWARD_KERNELS,
                         ids=[f"{name}-{'softcap' if k[3] else 'plain'}"
                              for name, k in zip((KERNEL_IDS[KERNELS.index(k[:3])] for k in BACKWARD_KERNELS),
                                                 BACKWARD_KERNELS)])
def test_backward_small_blocks_match_reference(isa, engine, matmul_dtype, softcap, with_entropy):
    """Blocks and tiles far smaller than the sizes, none dividing them (vocab chunks, token blocks, tile tails),
    a subset of rows out of order, positions without a target; outputs poisoned with NaN. With bf16 matmuls,
    dL/dlogits is rounded to bf16 for the gradient products (and the aten engine's logits tiles too, as ATen's
    CPU bf16 matmul returns them), an error that grows with the logits (measured up to 5% relative at logits of
    +-20 without a softcap): that path is checked with softcapped logits, against a reference that sees the same
    bf16 inputs."""
    case = make_case(batch=3, seq_len=13, vocab=1031, dim=37, bias=True)
    rows = torch.randperm(3 * 13)[:31]
    targets = case.ids.reshape(-1)[rows]
    targets[:4] = -1
    transform = LogitTransform(temperature=0.7, bias=case.kwargs["bias"], logit_scale=0.9, softcap=softcap)
    args = backward_inputs(case, rows, targets, transform, with_entropy)
    got = cpp_backend.backward(*args[:5], *(None if t is None else t.float() for t in args[5:]), (True, True, True),
                               token_block=20, vocab_block=300, tile_rows=5, tile_tokens=4, tile_vocab=37,
                               matmul_dtype=matmul_dtype, engine=engine, isa=isa)
    tol = 1e-5 if matmul_dtype is None else 1e-2
    for name, a, b in zip(("hidden", "weight", "bias"), got, float64_gradients(args, matmul_dtype)):
        assert a.dtype == torch.float32
        assert relative_error(a, b) <= tol, f"seed {case.seed}: d{name}"


def test_backward_balanced_items_match_reference():
    """Token blocks far longer than the vocab chunks: each dL/dhidden work item then takes more positions than
    tile_rows (as many as cost what a dL/dweight item does), and the last, narrower chunk takes a whole block."""
    case = make_case(batch=2, seq_len=29, vocab=1031, dim=37, bias=True)
    rows = torch.randperm(2 * 29)[:53]
    transform = LogitTransform(temperature=1.3, bias=case.kwargs["bias"])
    args = backward_inputs(case, rows, case.ids.reshape(-1)[rows], transform, True)
    got = cpp_backend.backward(*args[:5], *(None if t is None else t.float() for t in args[5:]), (True, True, True),
                               token_block=30, vocab_block=7, tile_rows=2, tile_tokens=4, tile_vocab=5)
    for name, a, b in zip(("hidden", "weight", "bias"), got, float64_gradients(args)):
        assert relative_error(a, b) <= 1e-5, f"seed {case.seed}: d{name}"


def test_backward_keeps_the_head_dtype_and_skips_unneeded_gradients():
    case = make_case(batch=2, seq_len=9, vocab=531, dim=24, bias=True, dtype=torch.bfloat16)
    rows = torch.arange(18)
    # softcapped: on CPUs with bf16 units the bf16 matmul rounds each logits tile to bf16 (see
    # test_backward_small_blocks_match_reference), an error that grows with the logits
    transform = LogitTransform(bias=case.kwargs["bias"], softcap=4.0)
    args = backward_inputs(case, rows, case.ids.reshape(-1), transform, False)
    expected = float64_gradients(args)
    for needs in ((True, False, False), (False, True, True)):
        got = cpp_backend.backward(*args[:5], *(None if t is None else t.float() for t in args[5:]), needs,
                                   vocab_block=200)
        for need, a, b, dtype in zip(needs, got, expected, (torch.float32, torch.bfloat16, transform.bias.dtype)):
            if not need:
                assert a is None
                continue
            assert a.dtype == dtype and relative_error(a, b) <= 2e-2, f"seed {case.seed}"


def test_backward_of_no_positions_is_zero():
    case = make_case(batch=1, seq_len=4, vocab=97, dim=16, bias=True)
    empty = torch.empty(0)
    grads = cpp_backend.backward(case.hidden[0], case.weight, torch.empty(0, dtype=torch.long),
                                 torch.empty(0, dtype=torch.long), LogitTransform(bias=case.kwargs["bias"]), empty,
                                 None, empty, empty, None, (True, True, True))
    assert grads[0].shape == (0, 16)
    assert torch.equal(grads[1], torch.zeros(97, 16)) and torch.equal(grads[2], torch.zeros(97))


@pytest.mark.parametrize("path", cpp_paths(), ids=KERNEL_IDS)
def test_backward_thread_counts_agree_bitwise(path):
    """Vocab chunks and tiles split over 1, 2 and 3 threads; every gradient row owned by one work item."""
    case = thread_case(path)

    def gradients():
        h, w, b = (t.detach().requires_grad_() for t in (case.hidden, case.weight, case.kwargs["bias"]))
        stats = token_statistics(h, w, case.ids, bias=b, softcap=6.0, backend="cpp")
        return torch.autograd.grad((stats.lse - stats.chosen_logit).sum(), (h, w, b))

    results = on_each_thread_count(gradients, **forced(path))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("path", cpp_paths(), ids=KERNEL_IDS)
def test_backward_token_items_longer_than_tile_rows(path):
    """Regression: with bf16 tiles, a dL/dhidden work item of more positions than tile_rows (a full token block
    against a narrow vocabulary: 742 positions, V = 434) overran the per-thread product buffer of tile_rows x D
    ("start (0) + length (...) exceeds dimension size"), on every CPU with bf16 units; also real vocabularies
    through their last, narrow chunk (V = 151936 = 74 x 2048 + 384)."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(742, 1119, generator=g).to(inputs_dtype(path)).requires_grad_()
    weight = (torch.randn(434, 1119, generator=g) / 1119**0.5).to(inputs_dtype(path)).requires_grad_()
    targets = torch.randint(0, 434, (742,), generator=g)
    with cpu_paths(**forced(path)):
        stats = token_statistics(hidden, weight, targets, backend="cpp")
        got = torch.autograd.grad((stats.lse - stats.chosen_logit).sum(), (hidden, weight))
    h64, w64 = (t.detach().double().requires_grad_() for t in (hidden, weight))
    ref_stats = token_statistics(h64, w64, targets, backend="reference")
    ref = torch.autograd.grad((ref_stats.lse - ref_stats.chosen_logit).sum(), (h64, w64))
    tol = 1e-5 if path.tile_dtype == torch.float32 else 2e-2
    for name, a, b in zip(("hidden", "weight"), got, ref):
        assert relative_error(a, b) <= tol, f"d{name}"


def cpp_forward_job(tokens: int, dim: int, vocab: int) -> int:
    """Peak extra bytes of one backend='cpp' forward in this (fresh) process (the backward's: test_memory)."""
    from endokernel import fused_endogenous_reward
    from endokernel._core.memory import measure
    from endokernel.bench.inputs import random_inputs

    hidden, weight, ids = random_inputs(tokens, dim, vocab, torch.float32, torch.device("cpu"))
    fused_endogenous_reward(hidden[:2], weight, ids[:2], prompt_len=1, backend="cpp")  # one-time costs first
    return measure(lambda: fused_endogenous_reward(hidden, weight, ids, prompt_len=tokens // 4, backend="cpp"),
                   torch.device("cpu"))[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for resident memory")
def test_logits_free_peak_memory_is_far_below_the_logits():
    from endokernel._core.memory import in_fresh_process

    tokens, vocab = 8192, 65536
    logits_bytes = tokens * vocab * 4  # 2 GiB in float32
    extra = in_fresh_process(cpp_forward_job, tokens, 64, vocab)
    assert extra < logits_bytes / 32, f"peak extra {extra / MiB:.0f} MiB"
