"""The compiled Triton kernels on a real GPU (skipped without CUDA): parity, determinism, every forward and
backward variant (descriptors / pointers, contiguous / gathered positions, epilogue slices, both block axes of
the backward, every backward candidate), transposed inputs, 64-bit offsets, memory bounds, autotuning, inputs
on another GPU than the current one (with two GPUs). Run with ``pytest -m gpu``; ``bench/gpu_check.sh`` runs
them on a lent GPU."""

import math
from dataclasses import replace

import pytest
import torch

from endokernel import fused_endogenous_reward
from endokernel._core.transform import LogitTransform
from endokernel.backends import reference
from endokernel.backends.triton import configs, tuning
from endokernel.backends.triton.backward import backward as triton_backward
from endokernel.backends.triton.forward import chosen_and_lse
from endokernel.backends.triton.runtime import device_target

from cases import CASES, fresh_seed, make_case, relative_error

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def to_cuda(case):
    case.hidden, case.weight, case.ids = case.hidden.cuda(), case.weight.cuda(), case.ids.cuda()
    case.attention_mask = case.attention_mask.cuda()
    if "bias" in case.kwargs:
        case.kwargs["bias"] = case.kwargs["bias"].cuda()
    return case


def score(case, backend):
    return fused_endogenous_reward(
        case.hidden, case.weight, case.ids, prompt_len=case.prompt_len, attention_mask=case.attention_mask,
        return_per_token=True, backend=backend, **case.kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", CASES)
def test_compiled_kernel_matches_reference(name, dtype):
    case = to_cuda(make_case(**CASES[name], dtype=dtype))
    rewards, per_token = score(case, "triton")
    ref_rewards, ref_per_token = score(case.cast(torch.float64), "reference")
    assert relative_error(rewards, ref_rewards) <= TOLERANCE[dtype], f"seed {case.seed}"
    assert relative_error(per_token, ref_per_token) <= TOLERANCE[dtype], f"seed {case.seed}"
    again = score(case, "triton")
    assert torch.equal(again[0], rewards) and torch.equal(again[1], per_token), "not bitwise reproducible"


def stats_inputs(dtype, *, tokens=1500, rows_total=1600, vocab=50021, dim=1024, gathered=False):
    seed = fresh_seed()
    g = torch.Generator(device="cuda").manual_seed(seed)
    hidden = torch.randn(rows_total, dim, device="cuda", generator=g).to(dtype)
    weight = (torch.randn(vocab, dim, device="cuda", generator=g) * (3 / dim**0.5)).to(dtype)
    rows = (torch.randperm(rows_total, device="cuda", generator=g)[:tokens].sort().values if gathered
            else torch.arange(7, 7 + tokens, device="cuda"))
    targets = torch.randint(-1, vocab, (tokens,), device="cuda", generator=g)
    transform = LogitTransform(temperature=0.8, bias=torch.randn(vocab, device="cuda", generator=g),
                               logit_scale=1.1, softcap=30.0)
    return seed, (hidden, weight, rows, targets, transform)


def to64(inputs):
    hidden, weight, rows, targets, transform = inputs
    return hidden.double(), weight.double(), rows, targets, replace(transform, bias=transform.bias.double())


def forward(inputs, **kwargs):
    outs = [torch.full((inputs[2].numel(),), float("nan"), device="cuda") for _ in range(3)]
    chosen_and_lse(*inputs, *outs, **kwargs)
    return outs


def variants(dtype):
    """The default config and every autotuning candidate of this GPU, each also with the other load path."""
    target = device_target(torch.device("cuda"))
    found = []
    for config in configs.forward_candidates(target, dtype, 1024):
        found += [config, replace(config, tma=not config.tma)]
    return list(dict.fromkeys(found))


@pytest.mark.parametrize("gathered", [False, True], ids=["contiguous", "gathered"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_forward_variants_match_reference(dtype, gathered):
    seed, inputs = stats_inputs(dtype, gathered=gathered)
    want = [torch.empty(inputs[2].numel(), dtype=torch.float64, device="cuda") for _ in range(3)]
    reference.chosen_and_lse(*to64(inputs), *want)
    for config in variants(dtype):
        got = forward(inputs, config=config)
        for label, a, b in zip(("chosen", "lse", "entropy"), got, want):
            assert relative_error(a, b) <= TOLERANCE[dtype], f"seed {seed}, {config}: {label}"
        again = forward(inputs, config=config)
        assert all(torch.equal(a, b) for a, b in zip(got, again)), f"{config}: not bitwise reproducible"


@pytest.mark.parametrize("budget_mib", [512, 8], ids=["one block", "many blocks"])
@pytest.mark.parametrize("shape", [(1500, 50021), (9000, 3001)], ids=["vocab blocks", "position blocks"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_backward_matches_reference(dtype, shape, budget_mib):
    tokens, vocab = shape
    seed, inputs = stats_inputs(dtype, tokens=tokens, rows_total=tokens + 50, vocab=vocab, gathered=True)
    lse, entropy = (torch.empty(tokens, dtype=torch.float64, device="cuda") for _ in range(2))
    reference.chosen_and_lse(*to64(inputs), torch.empty_like(lse), lse, entropy)
    g = torch.Generator(device="cuda").manual_seed(seed)
    upstream = [torch.randn(tokens, device="cuda", generator=g) for _ in range(3)]
    needs = (True, True, True)
    got = triton_backward(*inputs, lse.float(), entropy.float(), *upstream, needs, workspace_bytes=budget_mib << 20)
    again = triton_backward(*inputs, lse.float(), entropy.float(), *upstream, needs, workspace_bytes=budget_mib << 20)
    want = reference.backward(*to64(inputs), None, None, *(u.double() for u in upstream), needs)
    for label, a, b, c in zip(("hidden", "weight", "bias"), got, again, want):
        assert torch.equal(a, b), f"d{label} not bitwise reproducible"
        assert relative_error(a, c) <= (1e-4 if dtype == torch.float32 else 3e-2), f"seed {seed}: d{label}"


def upstream_grads(seed, tokens, device="cuda"):
    g = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(tokens, device=device, generator=g) for _ in range(3)]


def check_backward(got, inputs, upstream, dtype, seed, label=""):
    """All three gradients ``got`` (on any GPU) against the float64 reference on ``inputs``' GPU."""
    want = reference.backward(*to64(inputs), None, None, *(u.double().to(inputs[0].device) for u in upstream),
                              (True, True, True))
    for name, a, b in zip(("hidden", "weight", "bias"), got, want):
        assert relative_error(a, b.to(a.device)) <= (1e-4 if dtype == torch.float32 else 3e-2), \
            f"seed {seed} {label}: d{name}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_backward_candidates_match_reference(dtype):
    """Every autotuning candidate of the G kernel on this GPU, the epilogue in 1, 2 or 4 column slices."""
    tokens = 1500
    seed, inputs = stats_inputs(dtype, tokens=tokens, rows_total=tokens + 50, gathered=True)
    lse, entropy = (torch.empty(tokens, dtype=torch.float64, device="cuda") for _ in range(2))
    reference.chosen_and_lse(*to64(inputs), torch.empty_like(lse), lse, entropy)
    upstream = upstream_grads(seed, tokens)
    for config in configs.backward_candidates(device_target(torch.device("cuda")), dtype, 1024):
        got = triton_backward(*inputs, lse.float(), entropy.float(), *upstream, (True, True, True), config=config)
        check_backward(got, inputs, upstream, dtype, seed, config.label())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_transposed_inputs_match_reference(dtype):
    """Column-major hidden and head: pointer loads with strides along D (64-bit offsets), forward and backward."""
    tokens = 700
    seed, inputs = stats_inputs(dtype, tokens=tokens, rows_total=800, vocab=20011, dim=512, gathered=True)
    hidden, weight, rows, targets, transform = inputs
    transposed = (hidden.t().contiguous().t(), weight.t().contiguous().t(), rows, targets, transform)
    want = [torch.empty(tokens, dtype=torch.float64, device="cuda") for _ in range(3)]
    reference.chosen_and_lse(*to64(inputs), *want)
    for label, a, b in zip(("chosen", "lse", "entropy"), forward(transposed), want):
        assert relative_error(a, b) <= TOLERANCE[dtype], f"seed {seed}: {label}"
    upstream = upstream_grads(seed, tokens)
    got = triton_backward(*transposed, want[1].float(), want[2].float(), *upstream, (True, True, True))
    check_backward(got, inputs, upstream, dtype, seed)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_inputs_on_another_gpu_than_the_current_one():
    """A model on cuda:1 while cuda:0 is current: the kernels launch on cuda:1, on its current stream."""
    tokens, other = 700, torch.device("cuda", 1)
    seed, inputs = stats_inputs(torch.bfloat16, tokens=tokens, rows_total=800, vocab=20011, dim=512)
    hidden, weight, rows, targets, transform = inputs
    moved = (hidden.to(other), weight.to(other), rows.to(other), targets.to(other),
             replace(transform, bias=transform.bias.to(other)))
    want = [torch.empty(tokens, dtype=torch.float64, device="cuda") for _ in range(3)]
    reference.chosen_and_lse(*to64(inputs), *want)
    upstream = [u.to(other) for u in upstream_grads(seed, tokens)]
    with torch.cuda.device(0):
        got = [torch.full((tokens,), float("nan"), device=other) for _ in range(3)]
        chosen_and_lse(*moved, *got)
        grads = triton_backward(*moved, want[1].float().to(other), want[2].float().to(other), *upstream,
                                (True, True, True))
        torch.cuda.synchronize(other)
        assert torch.cuda.current_device() == 0
    for label, a, b in zip(("chosen", "lse", "entropy"), got, want):
        assert a.device == other, label
        assert relative_error(a, b.to(other)) <= TOLERANCE[torch.bfloat16], f"seed {seed}: {label}"
    check_backward(grads, inputs, upstream, torch.bfloat16, seed)


def test_large_batch_matches_torch_backend():
    case = to_cuda(make_case(batch=8, seq_len=700, vocab=32003, dim=1000, dtype=torch.bfloat16, bias=True,
                             softcap=30.0))
    triton_rewards = score(case, "triton")[0]
    ref_rewards = score(case.cast(torch.float32), "torch")[0]
    assert relative_error(triton_rewards, ref_rewards) <= 2e-2, f"seed {case.seed}"


def test_offsets_past_2_31_elements():
    """hidden and lm_head both hold more than 2**31 elements; only the last positions are scored."""
    dim, seq_len, vocab = 4096, 2**31 // 4096 + 300, 2**31 // 4096 + 1000
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(seq_len, dim, device="cuda", dtype=torch.bfloat16, generator=g)
    weight = torch.randn(vocab, dim, device="cuda", dtype=torch.bfloat16, generator=g).mul_(3 / math.sqrt(dim))
    ids = torch.randint(0, vocab, (seq_len,), device="cuda", generator=g)
    ids[-4:] = torch.tensor([vocab - 1, vocab - 7, 5, vocab - 2])  # chosen rows past 2**31 elements too
    prompt = seq_len - 6
    got = fused_endogenous_reward(hidden, weight, ids, prompt_len=prompt, return_per_token=True, backend="triton")
    want = fused_endogenous_reward(hidden[prompt - 1 :].float(), weight.float(), ids[prompt - 1 :], prompt_len=1,
                                   return_per_token=True, backend="torch", vocab_size=vocab)
    assert relative_error(got[0], want[0]) <= 2e-2
    assert relative_error(got[1][prompt:], want[1][1:]) <= 2e-2


def test_long_context_extra_memory():
    """131072 tokens through a Qwen3-4B head (D=2560, V=151936, bf16): the logits would be ~40 GB."""
    tokens, dim, vocab = 131072, 2560, 151936
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(tokens, dim, device="cuda", dtype=torch.bfloat16, generator=g)
    weight = torch.randn(vocab, dim, device="cuda", dtype=torch.bfloat16, generator=g).mul_(3 / math.sqrt(dim))
    ids = torch.randint(0, vocab, (tokens,), device="cuda", generator=g)
    fused_endogenous_reward(hidden[:1024], weight, ids[:1024], prompt_len=1)  # compile outside the measurement
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    reward = fused_endogenous_reward(hidden, weight, ids, prompt_len=1)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    assert torch.isfinite(reward)
    assert extra < 100 * 2**20, f"extra {extra / 2**20:.1f} MiB"


def test_backward_extra_memory_is_the_workspace_and_the_fp32_gradients():
    tokens, dim, vocab, budget = 8192, 2560, 151936, 256 << 20
    seed, inputs = stats_inputs(torch.bfloat16, tokens=tokens, rows_total=tokens + 7, vocab=vocab, dim=dim)
    lse = torch.zeros(tokens, device="cuda")
    upstream = [torch.randn(tokens, device="cuda") for _ in range(3)]
    triton_backward(*inputs, lse, lse, *upstream, (True, True, True), workspace_bytes=budget)  # compile first
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    grads = triton_backward(*inputs, lse, lse, *upstream, (True, True, True), workspace_bytes=budget)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    fp32_grads = sum(g.numel() * 4 for g in grads)
    assert extra <= budget + fp32_grads + 64 * 2**20, f"extra {extra / 2**20:.1f} MiB"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compiled_backward_matches_reference(dtype):
    case = to_cuda(make_case(batch=3, seq_len=40, vocab=4099, dim=100, bias=True, alpha=0.7, softcap=8.0))
    g = torch.Generator(device="cuda").manual_seed(case.seed)
    c_rewards = torch.randn(3, device="cuda", generator=g)
    kwargs = {k: v for k, v in case.kwargs.items() if k != "bias"}

    def grads(dt, backend):
        leaves = [t.to(dt).requires_grad_() for t in (case.hidden, case.weight, case.kwargs["bias"])]
        rewards = fused_endogenous_reward(leaves[0], leaves[1], case.ids, prompt_len=case.prompt_len,
                                          attention_mask=case.attention_mask, bias=leaves[2], backend=backend, **kwargs)
        return torch.autograd.grad((rewards * c_rewards.to(rewards.dtype)).sum(), leaves)

    got, again = grads(dtype, "triton"), grads(dtype, "triton")
    ref = grads(torch.float64, "reference")
    for a, b, r in zip(got, again, ref):
        assert torch.equal(a, b), "backward not bitwise reproducible"
        assert relative_error(a, r) <= (1e-4 if dtype == torch.float32 else 3e-2), f"seed {case.seed}"


def test_autotuning_on_the_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("ENDOKERNEL_CACHE_DIR", str(tmp_path))
    seed, inputs = stats_inputs(torch.bfloat16)
    tuning.set_autotune(True)
    try:
        tuned = forward(inputs)
        assert tuning.cache_file().exists()
        assert all(torch.equal(a, b) for a, b in zip(tuned, forward(inputs))), "the cached choice changed"
    finally:
        tuning.set_autotune(None)
    want = [torch.empty(inputs[2].numel(), dtype=torch.float64, device="cuda") for _ in range(3)]
    reference.chosen_and_lse(*to64(inputs), *want)
    assert all(relative_error(a, b) <= 2e-2 for a, b in zip(tuned, want)), f"seed {seed}"
