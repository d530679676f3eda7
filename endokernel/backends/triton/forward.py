"""Fused Triton statistics: per position, the chosen-token logit, ``T * logsumexp(z / T)`` and optionally the
entropy of ``softmax(z / T)``, straight from ``hidden`` and the LM head. Nothing of size N x V is allocated.

The grid is (token tiles) x (vocab splits). Each program owns ``BLOCK_T`` positions and one contiguous
range of the vocabulary; it walks that range ``BLOCK_V`` rows of the LM head at a time, computes the logits
tile with ``tl.dot`` (fp32 accumulation), applies bias / scale / softcap, picks the chosen logit and folds
the tile into an online (max, sum-exp2[, sum exp * (s - max)]) triple. Splits let short inputs fill the GPU;
their partials are merged in split order by ``combine.combine_splits_kernel``: bitwise identical run to run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..._core.alloc import new_empty
from ..._core.transform import LogitTransform
from .combine import combine_splits_kernel
from .runtime import kernel_flags, launch, multiprocessor_count, tl, transform_scalars, triton
from .tile import LOG2E, transformed_logits


@triton.jit
def partial_stats_kernel(
    hidden_ptr, weight_ptr, bias_ptr, rows_ptr, targets_ptr,
    part_ptr, part_stride,  # (4, S, N) fp32: max, sum of exp, sum of exp * (s - max), chosen; stride S * N
    num_positions, vocab, dim,
    stride_hn, stride_hd, stride_wv, stride_wd,
    vocab_per_split,
    logit_scale, softcap, inv_temperature,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    split = tl.program_id(1)
    offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_mask = offs_t < num_positions
    rows = tl.load(rows_ptr + offs_t, mask=t_mask, other=0).to(tl.int64)
    targets = tl.load(targets_ptr + offs_t, mask=t_mask, other=-1).to(tl.int64)
    h_rows = hidden_ptr + rows * stride_hn

    v_begin = split * vocab_per_split
    v_end = tl.minimum(v_begin + vocab_per_split, vocab)

    run_max = tl.full((BLOCK_T,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_T,), tl.float32)
    run_dev = tl.zeros((BLOCK_T,), tl.float32)  # sum of exp(s - max) * (s - max), s = z / T
    chosen = tl.zeros((BLOCK_T,), tl.float32)
    for v0 in range(v_begin, v_end, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)  # int32 indices (V < 2**31), int64 element offsets
        v_mask = offs_v < v_end
        z = transformed_logits(
            h_rows, t_mask, weight_ptr + offs_v.to(tl.int64) * stride_wv, v_mask, offs_v, bias_ptr,
            dim, stride_hd, stride_wd, logit_scale, softcap,
            HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, INPUT_PRECISION, DOT_IN_FP32, BLOCK_T, BLOCK_V, BLOCK_D)
        chosen += tl.sum(tl.where(offs_v[None, :] == targets[:, None], z, 0.0), axis=1)

        new_max = tl.maximum(run_max, tl.max(tl.where(v_mask[None, :], z, float("-inf")), axis=1))
        centered = (z - new_max[:, None]) * inv_temperature
        exps = tl.where(v_mask[None, :], tl.exp2(centered * LOG2E), 0.0)
        shift = (run_max - new_max) * inv_temperature  # -inf on the first tile, where run_sum is 0
        old_scale = tl.exp2(shift * LOG2E)
        if HAS_ENTROPY:
            shift = tl.where(run_sum > 0, shift, 0.0)
            run_dev = old_scale * (run_dev + shift * run_sum) + tl.sum(exps * centered, axis=1)
        run_sum = run_sum * old_scale + tl.sum(exps, axis=1)
        run_max = new_max

    out = part_ptr + split.to(tl.int64) * num_positions + offs_t
    tl.store(out, run_max, mask=t_mask)
    out += part_stride  # pointer steps, not products: 64-bit whatever S * N
    tl.store(out, run_sum, mask=t_mask)
    out += part_stride
    if HAS_ENTROPY:
        tl.store(out, run_dev, mask=t_mask)
    out += part_stride
    tl.store(out, chosen, mask=t_mask)


@dataclass(frozen=True)
class KernelConfig:
    block_t: int
    block_v: int
    block_d: int
    num_warps: int = 4
    num_stages: int = 1


def default_config(device: torch.device, dtype: torch.dtype) -> KernelConfig:
    if device.type == "cpu":  # the interpreter: few large programs run fastest
        return KernelConfig(block_t=16, block_v=64, block_d=32)
    if dtype == torch.float32:
        return KernelConfig(block_t=64, block_v=128, block_d=32, num_warps=8, num_stages=2)
    return KernelConfig(block_t=128, block_v=128, block_d=64, num_warps=8, num_stages=3)


def choose_num_splits(num_positions: int, vocab: int, config: KernelConfig, device: torch.device) -> int:
    """Enough vocab splits for about two programs per multiprocessor, each split at least 4 vocab blocks."""
    token_tiles = triton.cdiv(num_positions, config.block_t)
    wanted = triton.cdiv(2 * multiprocessor_count(device), token_tiles)
    return max(1, min(wanted, triton.cdiv(vocab, 4 * config.block_v)))


def chosen_and_lse(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    chosen_out: torch.Tensor,
    lse_out: torch.Tensor,
    entropy_out: torch.Tensor | None = None,
    *,
    config: KernelConfig | None = None,
    num_splits: int | None = None,
) -> None:
    """``StatisticsBackend.chosen_and_lse`` (``endokernel.backends``); outputs fp32. ``hidden`` and ``weight``
    share a dtype (fp32 / bf16 / fp16), any strides. ``config`` and ``num_splits`` override the defaults."""
    num_positions = rows.numel()
    if num_positions == 0:
        return
    vocab, dim = weight.shape
    device = hidden.device
    config = config or default_config(device, hidden.dtype)
    splits = num_splits or choose_num_splits(num_positions, vocab, config, device)
    vocab_per_split = triton.cdiv(triton.cdiv(vocab, splits), config.block_v) * config.block_v
    splits = triton.cdiv(vocab, vocab_per_split)  # no empty split

    partials = new_empty((4, splits, num_positions), dtype=torch.float32, device=device)
    bias = transform.bias
    launch(
        partial_stats_kernel,
        (triton.cdiv(num_positions, config.block_t), splits),
        device,
        hidden, weight, bias if bias is not None else weight, rows, targets, partials, splits * num_positions,
        num_positions, vocab, dim,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        vocab_per_split,
        *transform_scalars(transform),
        HAS_ENTROPY=entropy_out is not None,
        **kernel_flags(hidden, transform),
        BLOCK_T=config.block_t, BLOCK_V=config.block_v, BLOCK_D=config.block_d,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    combine_block = 128
    launch(
        combine_splits_kernel,
        (triton.cdiv(num_positions, combine_block),),
        device,
        partials, splits * num_positions, chosen_out, lse_out, entropy_out if entropy_out is not None else lse_out,
        num_positions, splits, transform.temperature, 1.0 / transform.temperature,
        HAS_ENTROPY=entropy_out is not None,
        BLOCK=combine_block,
    )
