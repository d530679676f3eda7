"""Fused Triton statistics: per position, the chosen-token logit, ``T * logsumexp(z / T)`` and optionally the
entropy of ``softmax(z / T)``, straight from ``hidden`` and the LM head. Nothing of size N x V is allocated.

The work is (token tiles) x (vocab splits) items. A persistent grid of ``programs_per_sm`` programs per
multiprocessor takes the items in grouped order (``tile.grouped_tile``: the programs running together share
their LM head rows in L2). An item owns ``BLOCK_T`` positions and one contiguous range of the vocabulary; it
walks that range ``BLOCK_V`` rows of the LM head at a time, computes the logits tile with ``tl.dot`` (fp32
accumulation; operands through tensor descriptors, i.e. TMA, on sm_90+), applies bias / scale / softcap and
folds the tile into an online (max, sum-exp2[, sum exp * (s - max)]) triple, in ``epilogue_split`` column
slices so that the epilogue needs fewer registers. The splits (``split_columns``, from the vocabulary and the
GPU, never from the number of positions: batch invariant) keep the programs running together on few token
tiles; their partials are merged in split order by ``combine.combine_splits_kernel``, which also computes the
chosen logits: bitwise identical run to run. Extra memory: 3 x splits x N floats.
"""

from __future__ import annotations

import torch

from ..._core.alloc import new_empty
from ..._core.transform import LogitTransform
from . import tuning
from .combine import combine_splits_kernel
from .configs import KernelConfig, forward_candidates, forward_default
from .runtime import (
    GPUTarget,
    Launch,
    contiguous_row_start,
    device_target,
    kernel_flags,
    multiprocessor_count,
    operands,
    tl,
    transform_scalars,
    triton,
)
from .tile import column_slices, fold_tile, grouped_tile, logits_tile, position_rows, transform_logits

COMBINE_BLOCK, COMBINE_BLOCK_D = 64, 64


@triton.jit
def _fold(logits, v0, v_end, bias_ptr, stats, logit_scale, softcap, inv_temperature,
          HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
          WIDTH: tl.constexpr):
    """Transform the raw logits of vocab columns v0 .. v0 + WIDTH and fold them into ``stats``."""
    offs_v = v0 + tl.arange(0, WIDTH)
    v_mask = offs_v < v_end
    z = transform_logits(logits, offs_v, v_mask, bias_ptr, logit_scale, softcap, HAS_BIAS, HAS_SCALE, HAS_SOFTCAP)
    run_max, run_sum, run_dev = stats
    return fold_tile(z, v_mask, run_max, run_sum, run_dev, inv_temperature, HAS_ENTROPY)


@triton.jit
def partial_stats_kernel(
    h_src, w_src,  # descriptors (H_DESC / W_DESC) of the positions' hidden rows and of the LM head, else pointers
    bias_ptr, rows_ptr,
    part_ptr, part_stride,  # (3, S, N) fp32: max, sum of exp, sum of exp * (s - max); stride S * N
    num_positions, vocab, dim,
    stride_hn, stride_hd, stride_wv, stride_wd,
    num_splits, vocab_per_split, num_programs,
    logit_scale, softcap, inv_temperature,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr, H_DESC: tl.constexpr, W_DESC: tl.constexpr,
    EPILOGUE_SPLIT: tl.constexpr, GROUP_T: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    tiles_t = tl.cdiv(num_positions, BLOCK_T)
    for item in tl.range(tl.program_id(0), tiles_t * num_splits, num_programs):
        t_tile, split = grouped_tile(item, tiles_t, num_splits, GROUP_T)
        t0 = t_tile * BLOCK_T
        offs_t, t_mask, h_rows = position_rows(h_src, rows_ptr, t0, num_positions, stride_hn, H_DESC, BLOCK_T)

        v_begin = split * vocab_per_split
        v_end = tl.minimum(v_begin + vocab_per_split, vocab)
        run_max = tl.full((BLOCK_T,), float("-inf"), tl.float32)
        run_sum = tl.zeros((BLOCK_T,), tl.float32)
        run_dev = tl.zeros((BLOCK_T,), tl.float32)  # sum of exp(s - max) * (s - max), s = z / T
        for v0 in tl.range(v_begin, v_end, BLOCK_V):
            logits = logits_tile(
                h_src, h_rows, t0, t_mask, w_src, v0, vocab, dim, stride_hd, stride_wv, stride_wd,
                H_DESC, W_DESC, INPUT_PRECISION, DOT_IN_FP32, BLOCK_T, BLOCK_V, BLOCK_D)
            stats = (run_max, run_sum, run_dev)
            if EPILOGUE_SPLIT == 1:
                stats = _fold(logits, v0, v_end, bias_ptr, stats, logit_scale, softcap, inv_temperature,
                              HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY, BLOCK_V)
            else:
                parts = column_slices(logits, BLOCK_T, BLOCK_V, EPILOGUE_SPLIT)
                for i in tl.static_range(EPILOGUE_SPLIT):
                    stats = _fold(parts[i], v0 + i * (BLOCK_V // EPILOGUE_SPLIT), v_end, bias_ptr, stats,
                                  logit_scale, softcap, inv_temperature, HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY,
                                  BLOCK_V // EPILOGUE_SPLIT)
            run_max, run_sum, run_dev = stats

        out = part_ptr + split.to(tl.int64) * num_positions + offs_t
        tl.store(out, run_max, mask=t_mask)
        out += part_stride  # pointer steps, not products: 64-bit whatever S * N
        tl.store(out, run_sum, mask=t_mask)
        if HAS_ENTROPY:
            tl.store(out + part_stride, run_dev, mask=t_mask)


# vocab splits start at multiples of this (every block_v divides it): the light and the full configuration fold the
# same 64-column slices of the same splits, whichever a call takes
SPLIT_ALIGN = 256


def split_columns(vocab: int, config: KernelConfig, programs: int, num_splits: int | None = None) -> int:
    """Vocabulary columns per split. Enough splits that the programs running together (``programs`` consecutive
    items of the grouped order: ``group_t`` token tiles x the splits) cover few token tiles, whose hidden rows
    then stay in L2 while the LM head streams past; each split at least 4 vocab blocks. Never from the number of
    positions: a row's statistics fold the same splits in the same order whatever else is in the call, so results
    are batch invariant (short inputs leave some multiprocessors idle instead)."""
    if num_splits:  # asked for (tests, tuning): splits of whole vocab blocks
        return triton.cdiv(triton.cdiv(vocab, num_splits), config.block_v) * config.block_v
    wanted = max(1, min(triton.cdiv(programs, config.group_t), triton.cdiv(vocab, 4 * config.block_v)))
    return triton.cdiv(triton.cdiv(vocab, wanted), SPLIT_ALIGN) * SPLIT_ALIGN


def plan(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    chosen_out: torch.Tensor,
    lse_out: torch.Tensor,
    entropy_out: torch.Tensor | None,
    *,
    config: KernelConfig,
    target: GPUTarget | None,
    multiprocessors: int,
    row_start: int | None,
    num_splits: int | None = None,
) -> list[Launch]:
    """The two launches (statistics kernel, split merge) for N = ``rows.numel()`` > 0 positions; ``row_start``
    says that ``rows`` is the range ``row_start ..`` (then hidden's rows may be read through a descriptor)."""
    num_positions = rows.numel()
    vocab, dim = weight.shape
    programs_cap = config.programs_per_sm * multiprocessors
    vocab_per_split = split_columns(vocab, config, programs_cap, num_splits)
    splits = triton.cdiv(vocab, vocab_per_split)  # no empty split
    items = triton.cdiv(num_positions, config.block_t) * splits
    programs = min(items, programs_cap)

    # descriptors where the target has TMA, and on the interpreter when asked (it runs them too)
    loads = operands(hidden, weight, num_positions, row_start, config.block_t, config.block_v, config.block_d,
                     config.tma, target)

    partials = new_empty((3, splits, num_positions), dtype=torch.float32, device=hidden.device)
    bias = transform.bias
    has_entropy = entropy_out is not None
    stats = Launch(
        partial_stats_kernel, (programs,),
        (loads.h_src, loads.w_src, bias if bias is not None else weight, rows,
         partials, splits * num_positions, num_positions, vocab, dim,
         hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
         splits, vocab_per_split, programs, *transform_scalars(transform)),
        dict(HAS_ENTROPY=has_entropy, **kernel_flags(hidden.dtype, "cpu" if target is None else "cuda", transform),
             H_DESC=loads.h_desc, W_DESC=loads.w_desc, EPILOGUE_SPLIT=config.epilogue_split, GROUP_T=config.group_t,
             BLOCK_T=config.block_t, BLOCK_V=config.block_v, BLOCK_D=config.block_d,
             num_warps=config.num_warps, num_stages=config.num_stages))
    logit_scale, softcap, inv_temperature = transform_scalars(transform)
    combine = Launch(
        combine_splits_kernel, (triton.cdiv(num_positions, COMBINE_BLOCK),),
        (partials, splits * num_positions, hidden, weight, bias if bias is not None else weight, rows, targets,
         chosen_out, lse_out, entropy_out if has_entropy else lse_out, num_positions, splits, dim,
         hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
         logit_scale, softcap, transform.temperature, inv_temperature),
        dict(HAS_BIAS=bias is not None, HAS_SCALE=transform.logit_scale is not None,
             HAS_SOFTCAP=transform.softcap is not None, HAS_ENTROPY=has_entropy, BLOCK=COMBINE_BLOCK,
             BLOCK_D=COMBINE_BLOCK_D))
    return [stats, combine]


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
    share a dtype (fp32 / bf16 / fp16), any strides. ``config`` and ``num_splits`` override the defaults (and
    autotuning, see ``tuning``)."""
    if rows.numel() == 0:
        return
    device = hidden.device
    target = device_target(device)
    row_start = contiguous_row_start(rows)

    def launches(chosen: KernelConfig) -> list[Launch]:
        return plan(hidden, weight, rows, targets, transform, chosen_out, lse_out, entropy_out, config=chosen,
                    target=target, multiprocessors=multiprocessor_count(device), row_start=row_start,
                    num_splits=num_splits)

    if config is None:
        light = (row_start is not None and entropy_out is None and transform.bias is None
                 and transform.logit_scale is None and transform.softcap is None)
        dim = weight.shape[1]
        config = tuning.pick("forward-light" if light else "forward", hidden, weight,
                             forward_default(target, hidden.dtype, dim, light),
                             lambda: forward_candidates(target, hidden.dtype, dim, light), launches)
    for launch in launches(config):
        launch.run(device)
