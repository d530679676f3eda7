"""The one method registry: every way a user could compute the per-token statistics (chosen logit and
logsumexp of the logits), plus the bare matmul floor, each built as a zero-argument callable over ``Inputs``.

The CE-loss methods (``F.linear_cross_entropy``, Cut Cross-Entropy, Liger) return the per-token NLL
``lse - chosen``: the same FLOPs and the same logits-sized work, so a fair speed bar.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .._core.transform import LogitTransform
from ..api import token_statistics
from ..backends import HAS_TRITON
from ..backends.cpp.loader import cpp_available
from ..backends.cpu_choice import cpu_matmul_dtype
from .inputs import Inputs
from .shapes import Case

GiB = 2**30


def naive_statistics(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                     softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the original script does, batched: logits in the input dtype (as a model's forward gives them),
    then float32 softcap, gather and logsumexp."""
    logits = LogitTransform(softcap=softcap).apply((hidden @ weight.T).float())
    return logits.gather(1, targets[:, None])[:, 0], torch.logsumexp(logits, dim=1)


def loop_statistics(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                    softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The original per-token loop: one matrix-vector product over the whole head per position."""
    transform = LogitTransform(softcap=softcap)
    chosen = torch.empty(hidden.shape[0], device=hidden.device)
    lse = torch.empty(hidden.shape[0], device=hidden.device)
    for t in range(hidden.shape[0]):
        logits = transform.apply((weight @ hidden[t]).float())
        chosen[t] = logits[targets[t]]
        lse[t] = torch.logsumexp(logits, dim=0)
    return chosen, lse


def tiled_matmul(hidden: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> None:
    """The floor: ``hidden @ weight.T`` in ``dtype`` tiles written into one reused buffer (the full product
    would not fit in memory at large N). CPU: 1024 x 1024 tiles; GPU: token tiles against the whole head,
    each product at most 2 GiB."""
    tokens, vocab = hidden.shape[0], weight.shape[0]
    if hidden.device.type == "cpu":
        token_block, vocab_block = 1024, 1024
    else:
        token_block, vocab_block = max(1, 2 * GiB // (vocab * dtype.itemsize)), vocab
    buffer = torch.empty(min(token_block, tokens) * min(vocab_block, vocab), dtype=dtype, device=hidden.device)
    for t0 in range(0, tokens, token_block):
        h = hidden[t0 : t0 + token_block].to(dtype)
        for v0 in range(0, vocab, vocab_block):
            w_t = weight[v0 : v0 + vocab_block].to(dtype).T
            torch.mm(h, w_t, out=buffer[: h.shape[0] * w_t.shape[1]].view(h.shape[0], w_t.shape[1]))


@functools.cache
def _compiled_naive() -> Callable[..., Any]:
    # dynamic shapes: the warm-up call on the first positions compiles the very code the timed calls run
    return torch.compile(naive_statistics, dynamic=True)


def _cce(inputs: Inputs) -> torch.Tensor:
    from cut_cross_entropy import linear_cross_entropy

    return linear_cross_entropy(inputs.hidden, inputs.weight, inputs.targets, softcap=inputs.softcap,
                                reduction="none")


def _liger(inputs: Inputs) -> torch.Tensor:
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    return liger_fused_linear_cross_entropy(inputs.hidden, inputs.weight, inputs.targets, reduction="none",
                                            softcap=inputs.softcap)


def _forward_backward(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], inputs: Inputs,
                      train_head: bool = True) -> Callable[[], tuple[torch.Tensor, ...]]:
    """A training step's worth: ``loss(hidden, weight)`` and its gradients for both, or with a frozen head
    (``train_head=False``: LoRA, a frozen reward model) for hidden only."""
    def step() -> tuple[torch.Tensor, ...]:
        hidden = inputs.hidden.detach().requires_grad_()
        weight = inputs.weight.detach().requires_grad_(train_head)
        return torch.autograd.grad(loss(hidden, weight), (hidden, weight) if train_head else (hidden,))

    return step


def _statistics_loss(backend: str, inputs: Inputs) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The summed per-token NLL from endokernel's statistics: the loss the CE methods' backward computes."""
    def loss(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        stats = token_statistics(hidden, weight, inputs.targets, softcap=inputs.softcap, backend=backend)
        return (stats.lse - stats.chosen_logit).sum()

    return loss


def _naive_loss(inputs: Inputs) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        chosen, lse = naive_statistics(hidden, weight, inputs.targets, inputs.softcap)
        return (lse - chosen).sum()

    return loss


def _needs_cuda(device: torch.device, dtype: torch.dtype) -> str | None:
    return None if device.type == "cuda" else "needs a CUDA GPU"


def _installed(module: str) -> Callable[[torch.device, torch.dtype], str | None]:
    def check(device: torch.device, dtype: torch.dtype) -> str | None:
        if importlib.util.find_spec(module) is None:
            return "not installed (pip install 'endokernel[bench]')"
        return _needs_cuda(device, dtype)

    return check


def _has_linear_cross_entropy(device: torch.device, dtype: torch.dtype) -> str | None:
    return None if hasattr(F, "linear_cross_entropy") else "needs torch >= 2.13 (F.linear_cross_entropy)"


def _has_chunked_options(device: torch.device, dtype: torch.dtype) -> str | None:
    return None if hasattr(torch.nn, "LinearCrossEntropyOptions") else "needs torch.nn.LinearCrossEntropyOptions"


def _triton_available(device: torch.device, dtype: torch.dtype) -> str | None:
    if not HAS_TRITON:
        return "triton not installed"
    # on CPU tensors the kernel runs only under Triton's interpreter: a correctness tool, not a speed
    return _needs_cuda(device, dtype)


def _cpp_built(device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return "CPU only"
    return None if cpp_available() else "C++ extension not built (or ENDOKERNEL_DISABLE_CPP=1)"


def _tile_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The fastest matmul dtype for ``hidden``: on CPUs without bf16 units that is fp32, as the torch backend
    chooses; GPUs multiply in the input dtype."""
    return cpu_matmul_dtype(hidden.dtype) if hidden.device.type == "cpu" else hidden.dtype


def _input_dtype_floor_differs(device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu" or cpu_matmul_dtype(dtype) == dtype:
        return "same as floor: the fastest tile dtype is the input dtype here"
    return None


def _logits_bytes(per_element: int) -> Callable[[Case], int]:
    """Rough peak extra memory of a method that materializes ``per_element`` bytes per logit."""
    return lambda case: case.tokens * case.head.vocab * per_element


@dataclass(frozen=True)
class Method:
    """One benchmarked method. ``build(inputs)`` returns the call to time; ``unavailable(device, dtype)``
    says why it cannot run there (None when it can); ``memory(case)`` is a rough upper bound of its peak
    extra bytes, used on CPU to skip what would not fit in RAM rather than swap or be killed."""

    name: str
    label: str
    build: Callable[[Inputs], Callable[[], Any]]
    unavailable: Callable[[torch.device, torch.dtype], str | None] = lambda device, dtype: None
    memory: Callable[[Case], int] = lambda case: 0
    floor: bool = False
    core: bool = False  # the floor and endokernel: never skipped for time, every ratio and claim rests on them
    small_n_only: bool = False  # too slow for large N: runs only up to --loop-max-tokens
    warmup_tokens: int = 128  # the warm-up (and probe) calls run on the first positions only
    softcap: bool = True  # applies the head's softcap
    backward: bool = False  # forward + backward (gradients for hidden and the head): selected with --methods backward


# memory bounds in bytes per logit: about twice the peaks measured with fp32 inputs (naive and linear_ce 8,
# compile 4, chunked well under 1), room for bf16 logits and softcap temporaries
METHODS = {
    method.name: method
    for method in (
        Method("floor", "floor: matmul, fastest tile dtype",
               lambda x: lambda: tiled_matmul(x.hidden, x.weight, _tile_dtype(x.hidden)), floor=True, core=True),
        Method("floor-input-dtype", "floor: matmul, input-dtype tiles",
               lambda x: lambda: tiled_matmul(x.hidden, x.weight, x.hidden.dtype),
               unavailable=_input_dtype_floor_differs, floor=True),
        Method("torch", "endokernel torch",
               lambda x: lambda: token_statistics(x.hidden, x.weight, x.targets, softcap=x.softcap, backend="torch"),
               core=True),
        Method("cpp", "endokernel cpp",
               lambda x: lambda: token_statistics(x.hidden, x.weight, x.targets, softcap=x.softcap, backend="cpp"),
               unavailable=_cpp_built, core=True),
        Method("triton", "endokernel triton",
               lambda x: lambda: token_statistics(x.hidden, x.weight, x.targets, softcap=x.softcap, backend="triton"),
               unavailable=_triton_available, core=True),
        Method("naive", "naive: logits + gather/logsumexp",
               lambda x: lambda: naive_statistics(x.hidden, x.weight, x.targets, x.softcap),
               memory=_logits_bytes(16)),
        Method("loop", "original per-token loop",
               lambda x: lambda: loop_statistics(x.hidden, x.weight, x.targets, x.softcap),
               small_n_only=True, warmup_tokens=4),
        Method("compile", "torch.compile(naive)",
               lambda x: lambda: _compiled_naive()(x.hidden, x.weight, x.targets, x.softcap),
               memory=_logits_bytes(12)),
        Method("linear_ce", "F.linear_cross_entropy",
               lambda x: lambda: F.linear_cross_entropy(x.hidden, x.weight, x.targets, reduction="none"),
               unavailable=_has_linear_cross_entropy, memory=_logits_bytes(12), softcap=False),
        Method("linear_ce-chunked", "F.linear_cross_entropy, chunked",
               lambda x: lambda: F.linear_cross_entropy(x.hidden, x.weight, x.targets, reduction="none",
                                                        options=torch.nn.LinearCrossEntropyOptions()),
               unavailable=_has_chunked_options, memory=_logits_bytes(4), softcap=False),
        Method("cce", "Cut Cross-Entropy", lambda x: lambda: _cce(x), unavailable=_installed("cut_cross_entropy")),
        Method("liger", "Liger fused linear CE", lambda x: lambda: _liger(x), unavailable=_installed("liger_kernel")),
        # forward + backward: gradients of the summed NLL for hidden and the head (the gradients are part of
        # the memory peak); the ratio to the one-matmul floor reads directly against "three matmuls' worth"
        Method("torch+bwd", "endokernel torch, fwd+bwd",
               lambda x: _forward_backward(_statistics_loss("torch", x), x), core=True, backward=True),
        Method("cpp+bwd", "endokernel cpp, fwd+bwd",
               lambda x: _forward_backward(_statistics_loss("cpp", x), x), unavailable=_cpp_built, core=True,
               backward=True),
        Method("triton+bwd", "endokernel triton, fwd+bwd",
               lambda x: _forward_backward(_statistics_loss("triton", x), x), unavailable=_triton_available,
               core=True, backward=True),
        # a frozen head: no dL/dweight product (one matmul of the backward's three), gradients for hidden only
        Method("torch+bwd-frozen-head", "endokernel torch, fwd+bwd, frozen head",
               lambda x: _forward_backward(_statistics_loss("torch", x), x, train_head=False), backward=True),
        Method("cpp+bwd-frozen-head", "endokernel cpp, fwd+bwd, frozen head",
               lambda x: _forward_backward(_statistics_loss("cpp", x), x, train_head=False), unavailable=_cpp_built,
               backward=True),
        Method("triton+bwd-frozen-head", "endokernel triton, fwd+bwd, frozen head",
               lambda x: _forward_backward(_statistics_loss("triton", x), x, train_head=False),
               unavailable=_triton_available, backward=True),
        Method("naive+bwd", "naive, fwd+bwd", lambda x: _forward_backward(_naive_loss(x), x),
               memory=_logits_bytes(24), backward=True),
        Method("linear_ce+bwd", "F.linear_cross_entropy, fwd+bwd",
               lambda x: _forward_backward(
                   lambda h, w: F.linear_cross_entropy(h, w, x.targets, reduction="none").sum(), x),
               unavailable=_has_linear_cross_entropy, memory=_logits_bytes(16), softcap=False, backward=True),
        Method("linear_ce-chunked+bwd", "F.linear_cross_entropy, chunked, fwd+bwd",
               lambda x: _forward_backward(
                   lambda h, w: F.linear_cross_entropy(h, w, x.targets, reduction="none",
                                                       options=torch.nn.LinearCrossEntropyOptions()).sum(), x),
               unavailable=_has_chunked_options, memory=_logits_bytes(4), softcap=False, backward=True),
        Method("cce+bwd", "Cut Cross-Entropy, fwd+bwd",
               lambda x: _forward_backward(
                   lambda h, w: _cce(Inputs(h, w, x.targets, x.softcap)).sum(), x),
               unavailable=_installed("cut_cross_entropy"), backward=True),
        Method("liger+bwd", "Liger fused linear CE, fwd+bwd",
               lambda x: _forward_backward(
                   lambda h, w: _liger(Inputs(h, w, x.targets, x.softcap)).sum(), x),
               unavailable=_installed("liger_kernel"), backward=True),
    )
}
FORWARD = tuple(name for name, method in METHODS.items() if not method.backward)
BACKWARD = tuple(name for name, method in METHODS.items() if method.backward or method.floor)
