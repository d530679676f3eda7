"""The contexts users call from, for the public functions and ``EndogenousRewardModel.score``: no_grad,
inference_mode (also with inference tensors used outside it), grad with only some inputs requiring it, CPU
autocast, non-contiguous and offset views, int32 ids, 1-4 threads and a thread count changed between calls.
Each gives the float64 reference's result (and, where the backend promises it, the same bits as the plain call)
or a clear error. And batch invariance: a row's results are bitwise the same scored alone or in any batch."""

import contextlib

import pytest
import torch

from endokernel import fused_endogenous_reward, fused_token_logprobs, token_statistics
from endokernel.backends import get
from endokernel.backends.cpu_paths import cpu_paths

import cases as fx
from cases import BACKENDS, NEEDS_CPP, make_case, relative_error

CONTEXTS = {
    "plain": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
    "enable_grad": torch.enable_grad,
    "autocast_bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
}


def results(case, backend):
    """Every public function's outputs on ``case`` (a list of tensors)."""
    kwargs = {k: case.kwargs[k] for k in ("alpha", "bias", "softcap") if k in case.kwargs}
    rewards, per_token = fused_endogenous_reward(case.hidden, case.weight, case.ids, prompt_len=case.prompt_len,
                                                 attention_mask=case.attention_mask, return_per_token=True,
                                                 backend=backend, **kwargs)
    logprobs, entropy = fused_token_logprobs(case.hidden, case.weight, case.ids, attention_mask=case.attention_mask,
                                             bias=kwargs.get("bias"), temperature=0.8, return_entropy=True,
                                             backend=backend)
    stats = token_statistics(case.hidden, case.weight, case.ids, backend=backend, **kwargs)
    return [rewards, per_token, logprobs, entropy, stats.chosen_logit, stats.lse]


def context_case(backend: str, **kwargs):
    """2 x 80 positions: several C++ token tiles of 64, so ATen's worker threads run matmuls (a smaller vocabulary
    under Triton's interpreter, which is slow)."""
    vocab = 257 if backend == "triton" else 1031
    return make_case(batch=2, seq_len=80, vocab=vocab, dim=48, bias=True, alpha=0.7, softcap=8.0, **kwargs)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_public_functions_in_every_context(backend, context):
    """Regression: backend='cpp' under inference_mode with more than one thread raised "Inplace update to inference
    tensor outside InferenceMode" (ATen's worker threads did not inherit it). Autocast does not reach into the
    kernels: fp32 inputs are multiplied in fp32 under a bf16 autocast, bitwise as outside it."""
    case = context_case(backend)
    plain = results(case, backend)
    with cpu_paths(threads=2), CONTEXTS[context]():
        got = results(case, backend)
    reference = results(case.cast(torch.float64), "reference")
    for a, b, ref in zip(got, plain, reference):
        assert a.dtype == torch.float32
        assert torch.equal(a, b), f"seed {case.seed}: not the plain call's bits"
        assert relative_error(a, ref) <= 1e-5, f"seed {case.seed}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_tensors_outside_inference_mode(backend):
    """Tensors made under inference_mode (a serving engine's outputs), scored after it ended."""
    case = context_case(backend)
    with torch.inference_mode():
        inference = context_case(backend, seed=case.seed)
    assert inference.hidden.is_inference()
    with cpu_paths(threads=2):
        for a, b in zip(results(inference, backend), results(case, backend)):
            assert torch.equal(a, b)


# which inputs require grad: every proper subset of (hidden, head, bias) that is not empty
SOME = {"hidden": (True, False, False), "head": (False, True, False), "bias": (False, False, True),
        "head+bias": (False, True, True), "hidden+bias": (True, False, True)}


@pytest.mark.parametrize("which", SOME)
@pytest.mark.parametrize("backend", BACKENDS)
def test_only_some_inputs_require_grad(backend, which, monkeypatch):
    """Gradients of exactly the inputs that require them, equal to the reference's; a frozen head (or hidden)
    is not differentiated at all: the backend is asked for no dL/dweight (dL/dhidden)."""
    case = make_case(batch=2, seq_len=40, vocab=531, dim=37, bias=True)
    wanted = SOME[which]
    module = get(backend)
    asked = []
    original = module.backward

    def spy(*args, **kwargs):
        asked.append(tuple(args[10]))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "backward", spy)

    def gradients(dtype, be):
        inputs = (case.hidden, case.weight, case.kwargs["bias"])
        leaves = [t.detach().to(dtype).requires_grad_(w) for t, w in zip(inputs, wanted)]
        rewards = fused_endogenous_reward(leaves[0], leaves[1], case.ids, prompt_len=case.prompt_len,
                                          attention_mask=case.attention_mask, bias=leaves[2], backend=be)
        logprobs = fused_token_logprobs(leaves[0], leaves[1], case.ids, attention_mask=case.attention_mask,
                                        bias=leaves[2], backend=be)
        (rewards.sum() + logprobs.sum()).backward()
        return [t.grad for t in leaves]

    with cpu_paths(threads=2):
        got = gradients(torch.float32, backend)
    assert asked and all(needs == wanted for needs in asked), asked
    ref = gradients(torch.float64, "reference")
    for g, r, w in zip(got, ref, wanted):
        assert (g is not None) == w
        if w:
            assert relative_error(g, r) <= 1e-4, f"seed {case.seed}"


def views(case):
    """The same inputs as views: hidden a transposed-storage view at an offset, the head column-major at an
    offset, ids a strided int32 view, the mask bool."""
    b, t, d = case.hidden.shape
    storage = torch.zeros(d + 3, b, t + 5)
    hidden = storage[3:].permute(1, 2, 0)[:, 5:]
    hidden.copy_(case.hidden)
    head_storage = torch.zeros(d, case.weight.shape[0] + 7)
    weight = head_storage[:, 7:].t()
    weight.copy_(case.weight)
    ids = torch.zeros(b, 2 * t, dtype=torch.int32)[:, ::2]
    ids.copy_(case.ids)
    assert not hidden.is_contiguous() and hidden.storage_offset() and not weight.is_contiguous()
    return hidden, weight, ids, case.attention_mask.bool()


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
def test_views_int32_ids_and_bool_mask(backend):
    case = context_case(backend)
    hidden, weight, ids, mask = views(case)
    got = fused_endogenous_reward(hidden, weight, ids, prompt_len=case.prompt_len, attention_mask=mask, alpha=0.7,
                                  backend=backend)
    plain = fused_endogenous_reward(case.hidden, case.weight, case.ids, prompt_len=case.prompt_len,
                                    attention_mask=case.attention_mask, alpha=0.7, backend=backend)
    got_lp, got_ent = fused_token_logprobs(hidden, weight, ids, attention_mask=mask, return_entropy=True,
                                           backend=backend)
    lp, ent = fused_token_logprobs(case.hidden, case.weight, case.ids, attention_mask=case.attention_mask,
                                   return_entropy=True, backend=backend)
    for a, b in ((got, plain), (got_lp, lp), (got_ent, ent)):
        assert relative_error(a, b) <= 1e-6, f"seed {case.seed}"


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=BACKENDS[2].marks)])
def test_any_thread_count_and_changes_between_calls(backend):
    """1 to 4 threads, set between calls as a process may: the reference result every time; the C++ backend
    bitwise the same whatever the count."""
    case = context_case(backend)
    reference = results(case.cast(torch.float64), "reference")
    before = torch.get_num_threads()
    outputs = []
    try:
        for threads in (1, 4, 2, 3, 1):
            torch.set_num_threads(threads)
            outputs.append(results(case, backend))
    finally:
        torch.set_num_threads(before)
    for out in outputs:
        for a, ref in zip(out, reference):
            assert relative_error(a, ref) <= 1e-5, f"seed {case.seed}"
        if backend == "cpp":
            assert all(torch.equal(a, b) for a, b in zip(out, outputs[0]))


# ------------------------------------------------------------------------------------------------ batch invariance


def pad_rows(rows, extra: int):
    """Rows of (hidden (n, D), ids (n,)) right-padded into a batch, with ``extra`` more padding positions."""
    length = max(h.shape[0] for h, _ in rows) + extra
    hidden = torch.randn(len(rows), length, rows[0][0].shape[1]).to(rows[0][0])  # padding holds garbage
    ids = torch.randint(0, 7, (len(rows), length), device=hidden.device)
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=hidden.device)
    for i, (h, x) in enumerate(rows):
        hidden[i, : len(x)], ids[i, : len(x)], mask[i, : len(x)] = h, x, 1
    return hidden, ids, mask


ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
INVARIANCE = [pytest.param(backend, "cpu", torch.float32, id=backend)
              for backend in ("torch", "triton", "reference")] + [
    pytest.param("cpp", "cpu", torch.float32, marks=NEEDS_CPP, id="cpp")] + [
    pytest.param("triton", "cuda", dtype, marks=ON_GPU, id=f"triton-cuda-{dtype}")
    for dtype in (torch.float32, torch.bfloat16)]


@pytest.mark.parametrize("backend,device,dtype", INVARIANCE)
def test_batch_invariance(backend, device, dtype):
    """A row's reward, per-token rewards, log-probs and entropy are bitwise the same scored alone or in any
    batch, with any padding (docs/reward.md promises it)."""
    g = torch.Generator().manual_seed(0)
    # D past the C++ kernels' 512-deep reduction chunks; smaller under Triton's interpreter (slow)
    dim, vocab = (520, 1500) if backend != "triton" else (40, 700) if device == "cpu" else (2560, 151936)
    weight = (torch.randn(vocab, dim, generator=g) / 25).to(device, dtype)
    rows = [(torch.randn(n, dim, generator=g).to(device, dtype), torch.randint(0, vocab, (n,), generator=g).to(device))
            for n in (5, 70, 130, 33)]

    def score(order, extra):
        hidden, ids, mask = pad_rows([rows[i] for i in order], extra)
        rewards, per_token = fused_endogenous_reward(hidden, weight, ids, prompt_len=[2] * len(order),
                                                     attention_mask=mask, return_per_token=True, backend=backend)
        logprobs, entropy = fused_token_logprobs(hidden, weight, ids, attention_mask=mask, return_entropy=True,
                                                 backend=backend)
        n = len(rows[0][1])
        i = order.index(0)
        return rewards[i], per_token[i, :n], logprobs[i, :n], entropy[i, :n]

    alone = score([0], 0)
    for order, extra in (([0, 1, 2, 3], 0), ([2, 0], 7), ([3, 0, 1], 100), ([0], 40)):
        for a, b in zip(alone, score(order, extra)):
            assert torch.equal(a, b), (order, extra)


# ------------------------------------------------------------------------------------------------ the scorer


@pytest.fixture(scope="module")
def reward_model():
    from endokernel import EndogenousRewardModel

    tokenizer = fx.make_tokenizer()
    return EndogenousRewardModel(fx.make_model("qwen3", len(tokenizer)), tokenizer)


@pytest.mark.parametrize("context", CONTEXTS)
def test_score_in_every_context(reward_model, context):
    """Shared prompts (their cached prefix), fused decoder ops and the kernels, in every context on 2 threads;
    the same rewards as the plain call (under a bf16 autocast the decoder's matmuls run in bf16: within bf16's
    rounding)."""
    pairs = fx.sample_pairs(6) + [(prompt, response + " Indeed.") for prompt, response in fx.sample_pairs(6)]
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    plain = reward_model.score(prompts, responses)
    with cpu_paths(threads=2), CONTEXTS[context]():
        got = reward_model.score(prompts, responses)
    if context == "autocast_bf16":
        assert relative_error(got, plain) <= 2e-2
    else:
        assert torch.equal(got, plain)


def test_score_with_the_thread_count_changed_between_calls(reward_model):
    pairs = fx.sample_pairs(4)
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    before = torch.get_num_threads()
    scores = []
    try:
        for threads in (1, 3, 2, 4):
            torch.set_num_threads(threads)
            scores.append(reward_model.score(prompts, responses))
    finally:
        torch.set_num_threads(before)
    for got in scores[1:]:
        assert relative_error(got, scores[0]) <= 1e-5


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=NEEDS_CPP)])
def test_compiled_in_a_context(backend, context):
    """torch.compile(fullgraph=True) of the public functions, called in each context: the eager bits."""
    case = context_case(backend)
    torch._dynamo.reset()
    compiled = torch.compile(lambda c: results(c, backend), fullgraph=True, backend="aot_eager")
    with cpu_paths(threads=2), CONTEXTS[context]():
        got = compiled(case)
    for a, b in zip(got, results(case, backend)):
        assert torch.equal(a, b)
