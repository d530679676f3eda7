"""Set-up shared by the pytest-benchmark files: small heads, so that ``pytest bench/ --benchmark-only`` takes a
couple of minutes on a CPU. The Triton benchmark runs only compiled on CUDA, so TRITON_INTERPRET is not set."""

import pytest
import torch

from endokernel.bench.inputs import build
from endokernel.bench.shapes import Head

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32  # bf16 matmuls are emulated on most CPUs
TOKENS = 8192 if DEVICE.type == "cuda" else 256
HEADS = [Head("small", dim=512, vocab=32000), Head("small-softcap", dim=512, vocab=32000, softcap=30.0)]


@pytest.fixture(scope="module", params=HEADS, ids=[head.name for head in HEADS])
def inputs(request):
    return build(request.param, DTYPE, TOKENS, DEVICE)
