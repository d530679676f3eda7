"""Backend internals under settings the public defaults never reach: tiny tiles, many vocab splits,
the bf16 matmul path of CPUs with bf16 units. Outputs are poisoned and compared to float64."""

import pytest
import torch

import endokernel._core.alloc
from endokernel._core.transform import LogitTransform
from endokernel.backends import reference, torch_tiled
from endokernel.backends.triton import forward as triton_fwd

from cases import fresh_seed, relative_error


def random_stats_inputs(num_positions=23, rows_total=40, vocab=531, dim=37, dtype=torch.float32):
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows_total, dim, generator=g).to(dtype)
    weight = (torch.randn(vocab, dim, generator=g) * 3 / dim**0.5).to(dtype)
    rows = torch.randperm(rows_total, generator=g)[:num_positions]
    targets = torch.randint(-1, vocab, (num_positions,), generator=g)
    transform = LogitTransform(temperature=0.7, bias=torch.randn(vocab, generator=g), logit_scale=1.3, softcap=6.0)
    return seed, hidden, weight, rows, targets, transform


def run(fn, hidden, weight, rows, targets, transform, **kwargs):
    chosen = endokernel._core.alloc.new_empty(rows.numel(), dtype=torch.float32, device=hidden.device)
    lse = endokernel._core.alloc.new_empty(rows.numel(), dtype=torch.float32, device=hidden.device)
    fn(hidden, weight, rows, targets, transform, chosen, lse, **kwargs)
    return chosen, lse


def expected(hidden, weight, rows, targets, transform):
    chosen = torch.empty(rows.numel(), dtype=torch.float64)
    lse = torch.empty(rows.numel(), dtype=torch.float64)
    t64 = LogitTransform(transform.temperature, transform.bias.double(), transform.logit_scale, transform.softcap)
    reference.chosen_and_lse(hidden.double(), weight.double(), rows, targets, t64, chosen, lse)
    return chosen, lse


@pytest.mark.parametrize("num_splits", [1, 2, 7, 34])
@pytest.mark.parametrize("blocks", [(16, 16, 16), (32, 64, 16)])
def test_triton_splits_and_tiles(blocks, num_splits):
    seed, *inputs = random_stats_inputs()
    config = triton_fwd.KernelConfig(*blocks)
    chosen, lse = run(triton_fwd.chosen_and_lse, *inputs, config=config, num_splits=num_splits)
    ref_chosen, ref_lse = expected(*inputs)
    assert relative_error(chosen, ref_chosen) <= 1e-5, f"seed {seed}"
    assert relative_error(lse, ref_lse) <= 1e-5, f"seed {seed}"


def test_triton_results_do_not_depend_on_row_order_of_hidden():
    seed, hidden, weight, rows, targets, transform = random_stats_inputs()
    strided = torch.empty(hidden.shape[0], hidden.shape[1] + 5)[:, 2:-3]  # non-contiguous rows
    strided.copy_(hidden)
    a = run(triton_fwd.chosen_and_lse, hidden, weight, rows, targets, transform)
    b = run(triton_fwd.chosen_and_lse, strided, weight, rows, targets, transform)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"seed {seed}"


@pytest.mark.parametrize("token_block,vocab_block", [(5, 100), (7, 531), (512, 2048)])
def test_torch_tiles(token_block, vocab_block):
    seed, *inputs = random_stats_inputs()
    chosen, lse = run(torch_tiled.chosen_and_lse, *inputs, token_block=token_block, vocab_block=vocab_block)
    ref_chosen, ref_lse = expected(*inputs)
    assert relative_error(chosen, ref_chosen) <= 1e-5, f"seed {seed}"
    assert relative_error(lse, ref_lse) <= 1e-5, f"seed {seed}"


def test_torch_bf16_matmul_path():
    """What CPUs with AMX / AVX512-BF16 run: bf16 tiles (forced here, so any CPU tests it)."""
    seed, *inputs = random_stats_inputs(dtype=torch.bfloat16)
    chosen, lse = run(torch_tiled.chosen_and_lse, *inputs, token_block=9, vocab_block=128,
                      matmul_dtype=torch.bfloat16)
    ref_chosen, ref_lse = expected(*inputs)
    assert relative_error(chosen, ref_chosen) <= 1e-5, f"seed {seed}"  # chosen logits are fp32 dot products
    assert relative_error(lse, ref_lse) <= 2e-2, f"seed {seed}"
