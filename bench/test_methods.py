"""pytest-benchmark: every method of the registry on small heads (``pytest bench/ --benchmark-only``).

The full sweep with peak memory and plots is ``endokernel bench``; this is the same registry under
pytest-benchmark's statistics, for quick comparisons between commits (``--benchmark-compare``).
"""

import pytest
import torch
from conftest import DEVICE

from endokernel.bench.methods import METHODS


@pytest.mark.parametrize("name", list(METHODS))
def test_method(benchmark, inputs, name):
    method = METHODS[name]
    reason = method.unavailable(DEVICE, inputs.hidden.dtype)
    if reason:
        pytest.skip(reason)
    call = method.build(inputs)

    def timed():
        call()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=3, warmup_rounds=1)
    flops = 2 * inputs.hidden.shape[0] * inputs.hidden.shape[1] * inputs.weight.shape[0]
    benchmark.extra_info["tflops_at_median"] = flops / benchmark.stats.stats.median / 1e12
