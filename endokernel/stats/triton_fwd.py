"""Fused Triton statistics: per position, the chosen-token logit and ``alpha * logsumexp(z / alpha)``,
straight from ``hidden`` and the LM head. Nothing of size N x V is ever allocated.

The grid is (token tiles) x (vocab splits). Each program owns ``BLOCK_T`` positions and one contiguous
range of the vocabulary; it walks that range ``BLOCK_V`` rows of the LM head at a time, computes the logits
tile with ``tl.dot`` (fp32 accumulation), applies bias / scale / softcap, picks the chosen logit and folds
the tile into an online (max, sum-exp2) pair. Splits let short inputs fill the GPU; their partials are
merged in split order by ``combine_splits_kernel``, so results are bitwise identical run to run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._alloc import new_empty
from .._triton import launch, multiprocessor_count, require_triton, tl, triton
from ..transform import LogitTransform
from .triton_combine import combine_splits_kernel

@triton.jit
def partial_stats_kernel(
    hidden_ptr, weight_ptr, bias_ptr, rows_ptr, targets_ptr,
    part_max_ptr, part_sum_ptr, part_chosen_ptr,  # (S, N) fp32 each
    num_positions, vocab, dim,
    stride_hn, stride_hd, stride_wv, stride_wd,
    vocab_per_split,
    logit_scale, softcap, log2e_over_alpha,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
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
    chosen = tl.zeros((BLOCK_T,), tl.float32)
    for v0 in range(v_begin, v_end, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)  # int32 indices (V < 2**31), int64 element offsets
        v_mask = offs_v < v_end
        w_cols = weight_ptr + offs_v.to(tl.int64) * stride_wv

        logits = tl.zeros((BLOCK_T, BLOCK_V), tl.float32)
        for d0 in range(0, dim, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_mask = offs_d < dim
            h = tl.load(h_rows[:, None] + offs_d[None, :] * stride_hd,
                        mask=t_mask[:, None] & d_mask[None, :], other=0.0)
            w = tl.load(w_cols[None, :] + offs_d[:, None] * stride_wd,
                        mask=d_mask[:, None] & v_mask[None, :], other=0.0)
            if DOT_IN_FP32:
                h = h.to(tl.float32)
                w = w.to(tl.float32)
            logits = tl.dot(h, w, logits, input_precision=INPUT_PRECISION)

        if HAS_BIAS:
            logits += tl.load(bias_ptr + offs_v, mask=v_mask, other=0.0).to(tl.float32)[None, :]
        if HAS_SCALE:
            logits *= logit_scale
        if HAS_SOFTCAP:
            # softcap * tanh(z / softcap) with tanh = sign * (1 - e) / (1 + e), e = exp(-2|x|): never overflows
            x = logits / softcap
            e = tl.exp2(tl.abs(x) * -2.8853900817779268)  # exp(-2|x|), 2 / ln(2) = 2.885...
            tanh_abs = (1.0 - e) / (1.0 + e)
            logits = softcap * tl.where(x < 0, -tanh_abs, tanh_abs)

        chosen += tl.sum(tl.where(offs_v[None, :] == targets[:, None], logits, 0.0), axis=1)

        logits = tl.where(v_mask[None, :], logits, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        tile_sum = tl.sum(tl.exp2((logits - new_max[:, None]) * log2e_over_alpha), axis=1)
        run_sum = run_sum * tl.exp2((run_max - new_max) * log2e_over_alpha) + tile_sum
        run_max = new_max

    out = split.to(tl.int64) * num_positions + offs_t
    tl.store(part_max_ptr + out, run_max, mask=t_mask)
    tl.store(part_sum_ptr + out, run_sum, mask=t_mask)
    tl.store(part_chosen_ptr + out, chosen, mask=t_mask)


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


def _input_precision(dtype: torch.dtype) -> str:
    # fp32 inputs follow torch's own matmul setting: exact fp32 unless the user opted into TF32
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def chosen_and_lse(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    chosen_out: torch.Tensor,
    lse_out: torch.Tensor,
    *,
    config: KernelConfig | None = None,
    num_splits: int | None = None,
) -> None:
    """Write per-position statistics into ``chosen_out`` / ``lse_out`` (N,) fp32.

    ``hidden`` (M, D) and ``weight`` (V, D): same dtype (fp32 / bf16 / fp16), any strides. ``rows`` (N,)
    int64 selects rows of ``hidden``; ``targets`` (N,) int64 is the token whose logit is gathered
    (< 0: none, chosen is 0). ``config`` and ``num_splits`` override the defaults (tests use them).
    """
    require_triton()
    num_positions = rows.numel()
    if num_positions == 0:
        return
    vocab, dim = weight.shape
    device = hidden.device
    config = config or default_config(device, hidden.dtype)
    splits = num_splits or choose_num_splits(num_positions, vocab, config, device)
    vocab_per_split = triton.cdiv(triton.cdiv(vocab, splits), config.block_v) * config.block_v
    splits = triton.cdiv(vocab, vocab_per_split)  # no empty split

    partials = new_empty((3, splits, num_positions), dtype=torch.float32, device=device)
    part_max, part_sum, part_chosen = partials.unbind(0)
    bias = transform.bias
    launch(
        partial_stats_kernel,
        (triton.cdiv(num_positions, config.block_t), splits),
        device,
        hidden, weight, bias if bias is not None else weight, rows, targets,
        part_max, part_sum, part_chosen,
        num_positions, vocab, dim,
        hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
        vocab_per_split,
        float(transform.logit_scale or 1.0), float(transform.softcap or 1.0), transform.log2e_over_alpha,
        HAS_BIAS=bias is not None,
        HAS_SCALE=transform.logit_scale is not None,
        HAS_SOFTCAP=transform.softcap is not None,
        INPUT_PRECISION=_input_precision(hidden.dtype),
        # Triton's interpreter multiplies bf16 bit patterns in tl.dot (triton-lang/triton#11584): upcast there
        DOT_IN_FP32=device.type == "cpu" and hidden.dtype == torch.bfloat16,
        BLOCK_T=config.block_t, BLOCK_V=config.block_v, BLOCK_D=config.block_d,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    combine_block = 128
    launch(
        combine_splits_kernel,
        (triton.cdiv(num_positions, combine_block),),
        device,
        part_max, part_sum, part_chosen, chosen_out, lse_out,
        num_positions, splits, transform.log2e_over_alpha,
        BLOCK=combine_block,
    )
