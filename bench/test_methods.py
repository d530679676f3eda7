"""pytest-benchmark: every method of the registry on small heads (``pytest bench/ --benchmark-only``), each
output checked against a float64 computation of the same quantity.

The full sweep with peak memory and plots is ``endokernel bench``; this is the same registry under
pytest-benchmark's statistics, for quick comparisons between commits (``--benchmark-compare``).
"""

import pytest
import torch

from endokernel._core.transform import LogitTransform
from endokernel.bench.inputs import Inputs
from endokernel.bench.methods import METHODS, Method

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}  # normwise, against float64


def float64_truth(inputs: Inputs, softcap: float | None, backward: bool) -> tuple[torch.Tensor, ...]:
    """The per-token NLL ``lse - chosen`` in float64, or the gradients of its sum for hidden and the head."""
    hidden = inputs.hidden.double().requires_grad_(backward)
    weight = inputs.weight.double().requires_grad_(backward)
    logits = LogitTransform(softcap=softcap).apply(hidden @ weight.T)
    nll = torch.logsumexp(logits, dim=1) - logits.gather(1, inputs.targets[:, None])[:, 0]
    return torch.autograd.grad(nll.sum(), (hidden, weight)) if backward else (nll,)


def as_compared(method: Method, output) -> tuple[torch.Tensor, ...]:
    """A method's output as the tensors ``float64_truth`` gives: NLL from (chosen, lse) or TokenStatistics,
    a CE method's per-token NLL as it is, a backward method's (d hidden, d head)."""
    if method.backward:
        return tuple(output)
    if isinstance(output, torch.Tensor):
        return (output,)
    chosen, lse = output
    return (lse - chosen,)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(actual).all():
        return float("inf")
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("name", list(METHODS))
def test_method(benchmark, inputs, name):
    method = METHODS[name]
    reason = method.unavailable(DEVICE, inputs.hidden.dtype)
    if reason:
        pytest.skip(reason)
    call = method.build(inputs)

    def timed():
        output = call()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return output

    output = benchmark.pedantic(timed, rounds=3, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable, which runs each call once
        flops = 2 * inputs.hidden.shape[0] * inputs.hidden.shape[1] * inputs.weight.shape[0]
        benchmark.extra_info["tflops_at_median"] = flops / benchmark.stats.stats.median / 1e12
    if method.floor:
        return  # the bare matmul has no result to check
    truth = float64_truth(inputs, inputs.softcap if method.softcap else None, method.backward)
    for got, want in zip(as_compared(method, output), truth, strict=True):
        assert got.shape == want.shape
        assert relative_error(got, want) <= TOLERANCE[inputs.hidden.dtype], name
