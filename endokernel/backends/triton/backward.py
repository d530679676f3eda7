"""Triton backward of the statistics: logits-free, deterministic, at library-GEMM speed.

The gradient G = dL/d(W h + b) (N x V) is produced a block at a time into a bounded workspace in the inputs'
dtype: ``grad_logits_kernel`` recomputes the block's logits tiles (with the forward's own ``logits_tile`` /
``transform_logits``), turns them into G with the saved logsumexp (``logits_grad``) and writes fp32 column sums
of G per token tile for the bias. Two library GEMMs per block then accumulate in fp32, in a fixed order:

- blocks of positions (all V columns): dH[block] = G @ W, dW += G^T @ H[block];
- blocks of vocabulary rows (all N positions): dW[block] = G^T @ H, dH += G @ W[block].

The axis is the one whose fp32 accumulator (dW, V x D, or dH, N x D) is re-read and re-written fewer bytes; the
block is as large as the budget allows (``workspace_bytes``; else the ``ENDOKERNEL_WORKSPACE_MIB`` environment
variable; default ``DEFAULT_WORKSPACE_MIB`` MiB). No atomics anywhere: bitwise identical run to run. Extra
memory: the workspace, fp32 dH (N x D) and dW (V x D). Roofline: docs/backends/triton.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
from torch.torch_version import TorchVersion

from ..._core.alloc import new_empty
from ..._core.transform import LogitTransform
from . import tuning
from .configs import KernelConfig, backward_candidates, backward_default
from .runtime import (
    GPUTarget,
    Launch,
    contiguous_row_start,
    device_target,
    kernel_flags,
    operands,
    tl,
    transform_scalars,
    triton,
)
from .tile import column_slices, grouped_tile, logits_grad, logits_tile, position_rows, transform_logits

DEFAULT_WORKSPACE_MIB = 512
UPCAST_SLICE_BYTES = 64 * 2**20  # fp32 copies of the GEMM operands where there is no bf16-in, fp32-out GEMM


@triton.jit
def _store_grad(
    raw, offs_t, t_mask, offs_v, v_mask, targets, lse, entropy, grad_chosen, grad_lse, grad_entropy,
    bias_ptr, g_ptr, stride_gn, colsum_row, logit_scale, softcap, inv_temperature,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
    NEEDS_COLSUM: tl.constexpr,
):
    """G of raw logits ``raw`` (rows ``offs_t``, vocab columns ``offs_v``) into the workspace, and its column
    sums into ``colsum_row``."""
    z = transform_logits(raw, offs_v, v_mask, bias_ptr, logit_scale, softcap, HAS_BIAS, HAS_SCALE, HAS_SOFTCAP)
    grad = logits_grad(z, offs_v, targets, lse, entropy, grad_chosen, grad_lse, grad_entropy,
                       logit_scale, softcap, inv_temperature, HAS_ENTROPY, HAS_SCALE, HAS_SOFTCAP)
    mask = t_mask[:, None] & v_mask[None, :]
    grad = tl.where(mask, grad, 0.0)
    g_ptrs = g_ptr + offs_t.to(tl.int64)[:, None] * stride_gn + offs_v[None, :]
    tl.store(g_ptrs, grad.to(g_ptr.dtype.element_ty), mask=mask)
    if NEEDS_COLSUM:
        tl.store(colsum_row + offs_v, tl.sum(grad, axis=0), mask=v_mask)


@triton.jit
def grad_logits_kernel(
    h_src, w_src,  # descriptors (H_DESC / W_DESC) of the chunk's hidden rows and of the LM head, else pointers
    bias_ptr, rows_ptr, targets_ptr, lse_ptr, entropy_ptr, grad_chosen_ptr, grad_lse_ptr, grad_entropy_ptr,
    g_ptr, stride_gn,  # (C, V) workspace in the inputs' dtype
    colsum_ptr, stride_cn,  # (token tiles, V) fp32 column sums of G per token tile
    num_positions, vocab, dim,
    stride_hn, stride_hd, stride_wv, stride_wd,
    logit_scale, softcap, inv_temperature,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ENTROPY: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr, H_DESC: tl.constexpr, W_DESC: tl.constexpr,
    NEEDS_COLSUM: tl.constexpr, EPILOGUE_SPLIT: tl.constexpr, GROUP_T: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    tiles_t = tl.cdiv(num_positions, BLOCK_T)
    t_tile, v_tile = grouped_tile(tl.program_id(0), tiles_t, tl.cdiv(vocab, BLOCK_V), GROUP_T)
    t0 = t_tile * BLOCK_T
    v0 = v_tile * BLOCK_V
    offs_t, t_mask, h_rows = position_rows(h_src, rows_ptr, t0, num_positions, stride_hn, H_DESC, BLOCK_T)
    targets = tl.load(targets_ptr + offs_t, mask=t_mask, other=-1).to(tl.int32)  # V < 2**31: int32 compares
    lse = tl.load(lse_ptr + offs_t, mask=t_mask, other=0.0)
    grad_chosen = tl.load(grad_chosen_ptr + offs_t, mask=t_mask, other=0.0)
    grad_lse = tl.load(grad_lse_ptr + offs_t, mask=t_mask, other=0.0)
    entropy = lse  # placeholders when there is no entropy term
    grad_entropy = lse
    if HAS_ENTROPY:
        entropy = tl.load(entropy_ptr + offs_t, mask=t_mask, other=0.0)
        grad_entropy = tl.load(grad_entropy_ptr + offs_t, mask=t_mask, other=0.0)
    colsum_row = colsum_ptr + t_tile.to(tl.int64) * stride_cn

    logits = logits_tile(h_src, h_rows, t0, t_mask, w_src, v0, vocab, dim, stride_hd, stride_wv, stride_wd,
                         H_DESC, W_DESC, INPUT_PRECISION, DOT_IN_FP32, BLOCK_T, BLOCK_V, BLOCK_D)
    if EPILOGUE_SPLIT == 1:
        offs_v = v0 + tl.arange(0, BLOCK_V)
        _store_grad(logits, offs_t, t_mask, offs_v, offs_v < vocab, targets, lse, entropy, grad_chosen, grad_lse,
                    grad_entropy, bias_ptr, g_ptr, stride_gn, colsum_row, logit_scale, softcap, inv_temperature,
                    HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY, NEEDS_COLSUM)
    else:  # the epilogue a column slice at a time (2 or 4): a fraction of the registers
        parts = column_slices(logits, BLOCK_T, BLOCK_V, EPILOGUE_SPLIT)
        offs_v = v0 + tl.arange(0, BLOCK_V // EPILOGUE_SPLIT)
        for i in tl.static_range(EPILOGUE_SPLIT):
            _store_grad(parts[i], offs_t, t_mask, offs_v, offs_v < vocab, targets, lse, entropy, grad_chosen,
                        grad_lse, grad_entropy, bias_ptr, g_ptr, stride_gn, colsum_row, logit_scale, softcap,
                        inv_temperature, HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY, NEEDS_COLSUM)
            offs_v += BLOCK_V // EPILOGUE_SPLIT  # a vector step: v0 + i * width cost sm_90a 14-28 registers


def workspace_budget(workspace_bytes: int | None = None) -> int:
    """Bytes the backward's workspace may take: ``workspace_bytes``, else ``ENDOKERNEL_WORKSPACE_MIB`` MiB, else
    ``DEFAULT_WORKSPACE_MIB`` MiB."""
    if workspace_bytes is not None:
        if isinstance(workspace_bytes, bool) or not isinstance(workspace_bytes, int) or workspace_bytes < 1:
            raise ValueError(f"workspace_bytes must be a positive integer, got {workspace_bytes!r}")
        return workspace_bytes
    text = os.environ.get("ENDOKERNEL_WORKSPACE_MIB")
    if text is None:
        return DEFAULT_WORKSPACE_MIB * 2**20
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"ENDOKERNEL_WORKSPACE_MIB must be a positive integer (MiB), got {text!r}")
    return int(text) * 2**20


def padded(length: int, itemsize: int) -> int:
    """``length`` elements rounded up to 16 bytes: workspace rows aligned for the GEMMs."""
    per_16 = 16 // itemsize
    return triton.cdiv(length, per_16) * per_16


@dataclass(frozen=True)
class Blocks:
    """How G is split: ``axis`` 'positions' (blocks of ``size`` positions, all V columns) or 'vocab' (blocks of
    ``size`` vocabulary rows, all N positions)."""

    axis: str
    size: int


def choose_blocks(num_positions: int, vocab: int, dim: int, itemsize: int, block_t: int, block_v: int,
                  budget: int, gathered: bool) -> Blocks:
    """The blocks whose fp32 accumulator traffic is the smaller, each as large as ``budget`` bytes allow (G
    rows, plus the hidden rows gathered when the positions are not one range of hidden's rows; at least one
    tile). Blocks of positions re-read and re-write dW (V x D) once per block after the first, blocks of
    vocabulary rows dH (N x D)."""
    per_position = (padded(vocab, itemsize) + (dim if gathered else 0)) * itemsize
    positions = min(max(1, budget // (per_position * block_t)), triton.cdiv(num_positions, block_t)) * block_t
    by_positions = Blocks("positions", positions)
    gathered_all = num_positions * dim * itemsize if gathered else 0
    rows = (budget - gathered_all) // (num_positions * itemsize) // block_v * block_v
    if rows < block_v:
        return by_positions
    by_vocab = Blocks("vocab", min(rows, triton.cdiv(vocab, block_v) * block_v))
    positions_traffic = (triton.cdiv(num_positions, by_positions.size) - 1) * vocab
    vocab_traffic = (triton.cdiv(vocab, by_vocab.size) - 1) * num_positions
    return by_vocab if vocab_traffic < positions_traffic else by_positions


def plan_grad_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    per_position: tuple[torch.Tensor, ...],
    workspace: torch.Tensor,
    colsum: torch.Tensor | None,
    *,
    has_entropy: bool,
    config: KernelConfig,
    target: GPUTarget | None,
    row_start: int | None,
) -> Launch:
    """The G kernel for one block: positions ``rows`` (``targets`` relative to ``weight``'s first row) against
    the vocabulary rows ``weight`` (a view of the LM head; ``transform.bias`` the same rows). The five
    ``per_position`` (lse, entropy, grad_chosen, grad_lse, grad_entropy; fp32, the entropy pair unused without
    ``has_entropy``) are the block's; ``workspace`` is (>= positions, >= vocab rows), row-major; ``colsum``
    (token tiles, vocab rows) fp32 or None; ``row_start``: ``rows`` is the range ``row_start ..``."""
    num_positions = rows.numel()
    vocab, dim = weight.shape
    loads = operands(hidden, weight, num_positions, row_start, config.block_t, config.block_v, config.block_d,
                     config.tma, target)
    bias = transform.bias
    grid = (triton.cdiv(num_positions, config.block_t) * triton.cdiv(vocab, config.block_v),)
    return Launch(
        grad_logits_kernel, grid,
        (loads.h_src, loads.w_src, bias if bias is not None else weight, rows, targets, *per_position,
         workspace, workspace.stride(0), colsum if colsum is not None else per_position[0],
         colsum.stride(0) if colsum is not None else 0,
         num_positions, vocab, dim, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
         *transform_scalars(transform)),
        dict(HAS_ENTROPY=has_entropy, **kernel_flags(hidden.dtype, "cpu" if target is None else "cuda", transform),
             H_DESC=loads.h_desc, W_DESC=loads.w_desc, NEEDS_COLSUM=colsum is not None,
             EPILOGUE_SPLIT=config.epilogue_split,
             GROUP_T=config.group_t, BLOCK_T=config.block_t, BLOCK_V=config.block_v, BLOCK_D=config.block_d,
             num_warps=config.num_warps, num_stages=config.num_stages))


def workspace_layout(num_positions: int, vocab: int, dim: int, dtype: torch.dtype, device: torch.device,
                     config: KernelConfig, budget: int, gathered: bool,
                     needs_bias: bool) -> tuple[Blocks, torch.Tensor, torch.Tensor | None]:
    """The blocks of G, the workspace that holds one block, and the bias column sums' buffer (or None)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    blocks = choose_blocks(num_positions, vocab, dim, itemsize, config.block_t, config.block_v, budget, gathered)
    shape = ((blocks.size, padded(vocab, itemsize)) if blocks.axis == "positions"
             else (num_positions, padded(blocks.size, itemsize)))
    workspace = new_empty(shape, dtype=dtype, device=device)
    colsum = (new_empty((triton.cdiv(shape[0], config.block_t), min(shape[1], vocab)), dtype=torch.float32,
                        device=device) if needs_bias else None)
    return blocks, workspace, colsum


def plan_block(hidden: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor,
               transform: LogitTransform, stats: tuple[torch.Tensor, ...], workspace: torch.Tensor,
               colsum: torch.Tensor | None, positions: tuple[int, int], vocab_rows: tuple[int, int], *,
               has_entropy: bool, config: KernelConfig, target: GPUTarget | None, row_start: int | None) -> Launch:
    """The G kernel for positions ``positions`` (p0, p1) x vocabulary rows ``vocab_rows`` (v0, v1) of the whole
    problem (``stats``: the five per-position fp32 tensors of ``plan_grad_logits``, for all positions)."""
    (p0, p1), (v0, v1) = positions, vocab_rows
    return plan_grad_logits(
        hidden, weight[v0:v1], rows[p0:p1], targets[p0:p1] - v0 if v0 else targets[p0:p1],
        replace(transform, bias=None if transform.bias is None else transform.bias[v0:v1]),
        tuple(p[p0:p1] for p in stats), workspace, colsum, has_entropy=has_entropy, config=config, target=target,
        row_start=None if row_start is None else row_start + p0)


def first_block(blocks: Blocks, num_positions: int, vocab: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(positions, vocab rows) of the first block."""
    if blocks.axis == "positions":
        return (0, min(blocks.size, num_positions)), (0, vocab)
    return (0, num_positions), (0, min(blocks.size, vocab))


def addmm_takes_fp32_self() -> bool:
    """Whether ``torch.addmm(fp32 self, bf16 / fp16 mat1, mat2, out_dtype=torch.float32)`` runs: torch 2.8 and
    2.9 have the ``out_dtype`` overload but require ``self`` in the operands' dtype; torch 2.10 accepts fp32."""
    return TorchVersion(torch.__version__) >= (2, 10)


def gemm_path(dtype: torch.dtype, device: torch.device) -> str:
    """How ``matmul_into`` multiplies operands of ``dtype`` on ``device``: 'fp32' (fp32 operands), 'out_dtype'
    (bf16 / fp16 operands, fp32 output: one library GEMM) or 'upcast' (the operands upcast to fp32 a slice of
    the inner dimension at a time: CPU, whose interpreter path has no such GEMM, and torch < 2.10)."""
    if dtype == torch.float32:
        return "fp32"
    return "out_dtype" if device.type == "cuda" and addmm_takes_fp32_self() else "upcast"


def matmul_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool) -> None:
    """``out = a @ b`` (``+=`` when ``accumulate``) into fp32 ``out``: products in the inputs' dtype with fp32
    accumulation (see ``gemm_path``)."""
    beta = 1 if accumulate else 0
    path = gemm_path(a.dtype, out.device)
    if path == "fp32":
        torch.addmm(out, a, b, beta=beta, out=out)
    elif path == "out_dtype":
        torch.addmm(out, a, b, out_dtype=torch.float32, beta=beta, out=out)
    else:
        # bf16 / fp16 products are exact in fp32 (and in TF32), so this is the out_dtype GEMM's arithmetic in
        # fp32 GEMMs (slower); the fp32 copies are bounded by UPCAST_SLICE_BYTES, not the operands' size
        inner = a.shape[1]
        step = max(1, UPCAST_SLICE_BYTES // (4 * (a.shape[0] + b.shape[1])))
        for k0 in range(0, max(inner, 1), step):  # in a fixed order: deterministic
            torch.addmm(out, a[:, k0 : k0 + step].float(), b[k0 : k0 + step].float(), beta=beta if k0 == 0 else 1,
                        out=out)


def backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    transform: LogitTransform,
    lse: torch.Tensor,
    entropy: torch.Tensor | None,
    grad_chosen: torch.Tensor,
    grad_lse: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    needs: tuple[bool, bool, bool],
    *,
    config: KernelConfig | None = None,
    workspace_bytes: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``StatisticsBackend.backward`` (``endokernel.backends``); gradients in fp32. ``config`` overrides the
    default (and autotuning), ``workspace_bytes`` the workspace budget (see ``workspace_budget``)."""
    num_positions = rows.numel()
    vocab, dim = weight.shape
    device = hidden.device
    budget = workspace_budget(workspace_bytes)
    grad_b = torch.zeros(vocab, dtype=torch.float32, device=device) if needs[2] else None
    if num_positions == 0:
        grad_h = hidden.new_zeros((0, dim), dtype=torch.float32) if needs[0] else None
        grad_w = torch.zeros(vocab, dim, dtype=torch.float32, device=device) if needs[1] else None
        return grad_h, grad_w, grad_b
    # every element of these is written by the first GEMM into it (beta = 0)
    grad_h = new_empty((num_positions, dim), dtype=torch.float32, device=device) if needs[0] else None
    grad_w = new_empty((vocab, dim), dtype=torch.float32, device=device) if needs[1] else None

    target = device_target(device)
    has_entropy = grad_entropy is not None
    stats = [lse.float(), entropy.float() if has_entropy else None, grad_chosen.float(), grad_lse.float(),
             grad_entropy.float() if has_entropy else None]
    stats = [p if p is not None else stats[0] for p in stats]
    row_start = contiguous_row_start(rows)

    def layout(chosen: KernelConfig) -> tuple[Blocks, torch.Tensor, torch.Tensor | None]:
        return workspace_layout(num_positions, vocab, dim, hidden.dtype, device, chosen, budget,
                                gathered=row_start is None, needs_bias=needs[2])

    def block(chosen: KernelConfig, positions, vocab_rows, workspace, colsum) -> Launch:
        return plan_block(hidden, weight, rows, targets, transform, tuple(stats), workspace, colsum, positions,
                          vocab_rows, has_entropy=has_entropy, config=chosen, target=target, row_start=row_start)

    def timed(chosen: KernelConfig) -> list[Launch]:  # autotuning times the G kernel on the first block
        blocks, workspace, colsum = layout(chosen)
        return [block(chosen, *first_block(blocks, num_positions, vocab), workspace, colsum)]

    if config is None:
        config = tuning.pick("backward", hidden, weight, backward_default(target, hidden.dtype, dim),
                             lambda: backward_candidates(target, hidden.dtype, dim), timed)
    blocks, workspace, colsum = layout(config)
    if blocks.axis == "positions":
        for p0 in range(0, num_positions, blocks.size):
            p1 = min(p0 + blocks.size, num_positions)
            block(config, (p0, p1), (0, vocab), workspace, colsum).run(device)
            g = workspace[: p1 - p0, :vocab]
            if needs[0]:
                matmul_into(grad_h[p0:p1], g, weight, accumulate=False)
            if needs[1]:
                h = hidden[row_start + p0 : row_start + p1] if row_start is not None else hidden[rows[p0:p1]]
                matmul_into(grad_w, g.T, h, accumulate=p0 > 0)
            if needs[2]:
                grad_b += colsum[: triton.cdiv(p1 - p0, config.block_t)].sum(0)
    else:
        h = None
        if needs[1]:
            h = hidden[row_start : row_start + num_positions] if row_start is not None else hidden[rows]
        for v0 in range(0, vocab, blocks.size):
            v1 = min(v0 + blocks.size, vocab)
            block(config, (0, num_positions), (v0, v1), workspace, colsum).run(device)
            g = workspace[:, : v1 - v0]
            if needs[0]:
                matmul_into(grad_h, g, weight[v0:v1], accumulate=v0 > 0)
            if needs[1]:
                matmul_into(grad_w[v0:v1], g.T, h, accumulate=False)
            if needs[2]:
                grad_b[v0:v1] = colsum[:, : v1 - v0].sum(0)
    return grad_h, grad_w, grad_b
