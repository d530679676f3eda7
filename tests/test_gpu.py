"""The compiled Triton kernels on a real GPU (skipped without CUDA): parity, determinism, 64-bit offsets,
long-context memory. Run with ``pytest -m gpu``; ``bench/gpu_check.sh`` runs them on a lent GPU."""

import math

import pytest
import torch
from test_parity import CASES

from endokernel import fused_endogenous_reward

from cases import make_case, relative_error

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


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
