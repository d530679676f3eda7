"""The logits-free paths score (and differentiate) inputs whose logits would take > 2 GB with a small memory
peak (fresh processes)."""

import sys

import pytest
import torch

from endokernel import cpp_available
from endokernel._core.memory import in_fresh_process
from endokernel.demo import run_job

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for resident memory")

MiB = 2**20


def test_logits_free_peak_memory_is_far_below_the_logits():
    tokens, vocab = 8192, 65536
    logits_bytes = tokens * vocab * 4  # 2 GiB in float32
    result = in_fresh_process(run_job, "endokernel", tokens, 64, vocab, torch.float32, "cpu")
    assert result.backend == "auto"
    assert result.extra_bytes < logits_bytes / 32, f"peak extra {result.extra_bytes / MiB:.0f} MiB"


def test_measurement_sees_materialized_logits():
    """The same measurement on the naive path must see its logits, or the test above proves nothing."""
    tokens, vocab = 2048, 65536
    scored_logits_bytes = (tokens - tokens // 4) * vocab * 4  # positions after the prompt, float32
    result = in_fresh_process(run_job, "naive", tokens, 64, vocab, torch.float32, "cpu")
    assert result.extra_bytes > scored_logits_bytes, f"peak extra {result.extra_bytes / MiB:.0f} MiB"


def forward_backward_job(tokens: int, dim: int, vocab: int, backend: str) -> int:
    """Peak extra bytes of one forward + backward (gradients for hidden and the LM head) in this process."""
    from endokernel import fused_endogenous_reward
    from endokernel._core.memory import measure
    from endokernel.bench.inputs import random_inputs

    hidden, weight, ids = random_inputs(tokens, dim, vocab, torch.float32, torch.device("cpu"))
    hidden.requires_grad_()
    weight.requires_grad_()
    grads = (torch.zeros_like(hidden), torch.zeros_like(weight))  # the gradients themselves are not "extra"

    def step():
        reward = fused_endogenous_reward(hidden, weight, ids, prompt_len=tokens // 4, backend=backend)
        d_hidden, d_weight = torch.autograd.grad(reward, (hidden, weight))
        grads[0].copy_(d_hidden)
        grads[1].copy_(d_weight)

    fused_endogenous_reward(hidden[:2], weight, ids[:2], prompt_len=1, backend=backend).backward()  # one-time costs
    return measure(step, torch.device("cpu"))[2]


@pytest.mark.parametrize("backend", ["torch"] + (["cpp"] if cpp_available() else []))
def test_forward_backward_peak_memory_is_far_below_the_logits(backend):
    tokens, dim, vocab = 8192, 64, 65536
    logits_bytes = tokens * vocab * 4  # 2 GiB in float32
    gradient_bytes = (tokens + vocab) * dim * 4  # what autograd hands back, once more while it is copied
    extra = in_fresh_process(forward_backward_job, tokens, dim, vocab, backend)
    assert extra < gradient_bytes + logits_bytes / 32, f"peak extra {extra / MiB:.0f} MiB"


def test_a_large_parent_does_not_count_in_a_fresh_process_peak():
    """A spawned process's getrusage peak holds its parent's resident set at the fork: the measurement must not."""
    ballast = torch.ones(512 * MiB // 4)  # 512 MiB, resident in this (parent) process
    result = in_fresh_process(run_job, "endokernel", 256, 16, 1000, torch.float32, "cpu")
    assert result.extra_bytes < 64 * MiB, f"peak extra {result.extra_bytes / MiB:.0f} MiB"
    del ballast
