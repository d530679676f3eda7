"""Triton backward of the statistics: logits-free, deterministic, at library-GEMM speed.

Per chunk of positions, ``grad_logits_kernel`` recomputes the chunk's logits tiles (with the forward's own
``logits_tile`` / ``transform_logits``) and writes G = dL/d(W h + b) with the saved logsumexp (``logits_grad``)
into a workspace of (chunk x V) in the inputs' dtype, plus fp32 column sums of G per token tile for the bias.
Then two library GEMMs, in a fixed order, accumulate in fp32: dH[chunk] = G @ W and dW += G^T @ H[chunk].
The chunk is as many positions as the workspace budget allows (``workspace_bytes``; default
``DEFAULT_WORKSPACE_MIB`` MiB, or the ``ENDOKERNEL_WORKSPACE_MIB`` environment variable). No atomics anywhere:
bitwise identical run to run. Extra memory: the workspace, fp32 dH (N x D) and dW (V x D).
See docs/backends/triton.md for the roofline.
"""

from __future__ import annotations

import os

import torch

from ..._core.alloc import new_empty
from ..._core.transform import LogitTransform
from . import tuning
from .configs import KernelConfig, backward_default, supports_tma
from .forward import contiguous_row_start
from .runtime import (
    GPUTarget,
    Launch,
    TensorDescriptor,
    descriptor_ready,
    device_target,
    kernel_flags,
    tl,
    transform_scalars,
    triton,
)
from .tile import column_halves, grouped_tile, logits_grad, logits_tile, transform_logits

DEFAULT_WORKSPACE_MIB = 256


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
    colsum_ptr,  # (tiles of C, V) fp32 column sums of G per token tile
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
    offs_t = t0 + tl.arange(0, BLOCK_T)
    t_mask = offs_t < num_positions
    if H_DESC:  # the descriptor's rows are the positions t0 ..
        h_rows = offs_t
    else:
        h_rows = h_src + tl.load(rows_ptr + offs_t, mask=t_mask, other=0).to(tl.int64) * stride_hn
    targets = tl.load(targets_ptr + offs_t, mask=t_mask, other=-1).to(tl.int32)  # V < 2**31: int32 compares
    lse = tl.load(lse_ptr + offs_t, mask=t_mask, other=0.0)
    grad_chosen = tl.load(grad_chosen_ptr + offs_t, mask=t_mask, other=0.0)
    grad_lse = tl.load(grad_lse_ptr + offs_t, mask=t_mask, other=0.0)
    entropy = lse  # placeholders when there is no entropy term
    grad_entropy = lse
    if HAS_ENTROPY:
        entropy = tl.load(entropy_ptr + offs_t, mask=t_mask, other=0.0)
        grad_entropy = tl.load(grad_entropy_ptr + offs_t, mask=t_mask, other=0.0)
    colsum_row = colsum_ptr + t_tile.to(tl.int64) * vocab

    logits = logits_tile(h_src, h_rows, t0, t_mask, w_src, v0, vocab, dim, stride_hd, stride_wv, stride_wd,
                         H_DESC, W_DESC, INPUT_PRECISION, DOT_IN_FP32, BLOCK_T, BLOCK_V, BLOCK_D)
    if EPILOGUE_SPLIT == 2:
        left, right = column_halves(logits, BLOCK_T, BLOCK_V)
        offs_v = v0 + tl.arange(0, BLOCK_V // 2)
        _store_grad(left, offs_t, t_mask, offs_v, offs_v < vocab, targets, lse, entropy, grad_chosen, grad_lse,
                    grad_entropy, bias_ptr, g_ptr, stride_gn, colsum_row, logit_scale, softcap, inv_temperature,
                    HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY, NEEDS_COLSUM)
        offs_v += BLOCK_V // 2
        _store_grad(right, offs_t, t_mask, offs_v, offs_v < vocab, targets, lse, entropy, grad_chosen, grad_lse,
                    grad_entropy, bias_ptr, g_ptr, stride_gn, colsum_row, logit_scale, softcap, inv_temperature,
                    HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY, NEEDS_COLSUM)
    else:
        offs_v = v0 + tl.arange(0, BLOCK_V)
        _store_grad(logits, offs_t, t_mask, offs_v, offs_v < vocab, targets, lse, entropy, grad_chosen, grad_lse,
                    grad_entropy, bias_ptr, g_ptr, stride_gn, colsum_row, logit_scale, softcap, inv_temperature,
                    HAS_BIAS, HAS_SCALE, HAS_SOFTCAP, HAS_ENTROPY, NEEDS_COLSUM)


def workspace_budget(workspace_bytes: int | None = None) -> int:
    """Bytes the backward's workspace may take: ``workspace_bytes``, else ``ENDOKERNEL_WORKSPACE_MIB`` MiB, else
    ``DEFAULT_WORKSPACE_MIB`` MiB."""
    if workspace_bytes is not None:
        return workspace_bytes
    text = os.environ.get("ENDOKERNEL_WORKSPACE_MIB")
    if text is None:
        return DEFAULT_WORKSPACE_MIB * 2**20
    try:
        mib = int(text)
    except ValueError:
        raise ValueError(f"ENDOKERNEL_WORKSPACE_MIB must be a positive integer (MiB), got {text!r}") from None
    if mib < 1:
        raise ValueError(f"ENDOKERNEL_WORKSPACE_MIB must be a positive integer (MiB), got {text!r}")
    return mib * 2**20


def padded_vocab(vocab: int, itemsize: int) -> int:
    """The workspace's row length: V rounded up to 16 bytes (aligned rows for the GEMMs)."""
    per_16 = 16 // itemsize
    return triton.cdiv(vocab, per_16) * per_16


def chunk_positions(num_positions: int, vocab: int, dim: int, itemsize: int, block_t: int, budget: int,
                    gathered: bool) -> int:
    """Positions per chunk: the most whole token tiles whose G rows (and gathered hidden rows, when the
    positions are not one range of hidden's rows) fit in ``budget`` bytes; at least one tile, at most all."""
    per_position = (padded_vocab(vocab, itemsize) + (dim if gathered else 0)) * itemsize
    tiles = max(1, budget // (per_position * block_t))
    return min(tiles, triton.cdiv(num_positions, block_t)) * block_t


def plan_chunk(
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
    """The G kernel for one chunk: ``rows``, ``targets`` and the five ``per_position`` (lse, entropy,
    grad_chosen, grad_lse, grad_entropy; fp32, the entropy pair unused without ``has_entropy``) are the chunk's;
    ``workspace`` is (>= chunk, V), row-major; ``colsum`` (token tiles, V) fp32 or None."""
    num_positions = rows.numel()
    vocab, dim = weight.shape
    tma = config.tma and TensorDescriptor is not None and (target is None or supports_tma(target))
    w_desc = tma and descriptor_ready(weight)
    h_view = hidden[row_start : row_start + num_positions] if row_start is not None else None
    h_desc = w_desc and h_view is not None and descriptor_ready(h_view)
    w_src = TensorDescriptor.from_tensor(weight, [config.block_v, config.block_d]) if w_desc else weight
    h_src = TensorDescriptor.from_tensor(h_view, [config.block_t, config.block_d]) if h_desc else hidden
    bias = transform.bias
    grid = (triton.cdiv(num_positions, config.block_t) * triton.cdiv(vocab, config.block_v),)
    return Launch(
        grad_logits_kernel, grid,
        (h_src, w_src, bias if bias is not None else weight, rows, targets, *per_position,
         workspace, workspace.stride(0), colsum if colsum is not None else per_position[0],
         num_positions, vocab, dim, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
         *transform_scalars(transform)),
        dict(HAS_ENTROPY=has_entropy, **kernel_flags(hidden.dtype, "cpu" if target is None else "cuda", transform),
             H_DESC=h_desc, W_DESC=w_desc, NEEDS_COLSUM=colsum is not None, EPILOGUE_SPLIT=config.epilogue_split,
             GROUP_T=config.group_t, BLOCK_T=config.block_t, BLOCK_V=config.block_v, BLOCK_D=config.block_d,
             num_warps=config.num_warps, num_stages=config.num_stages))


def matmul_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool) -> None:
    """``out = a @ b`` (``+= `` when ``accumulate``) into fp32 ``out``: one library GEMM, products in the inputs'
    dtype with fp32 accumulation."""
    beta = 1 if accumulate else 0
    if a.dtype == torch.float32:
        torch.addmm(out, a, b, beta=beta, out=out)
    elif out.device.type == "cuda":
        torch.addmm(out, a, b, out_dtype=torch.float32, beta=beta, out=out)
    else:  # CPU (the interpreter) has no bf16-in, fp32-out GEMM: the same products, in fp32
        torch.addmm(out, a.float(), b.float(), beta=beta, out=out)


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
    grad_h = new_empty((num_positions, dim), dtype=torch.float32, device=device) if needs[0] else None
    grad_w = torch.zeros(vocab, dim, dtype=torch.float32, device=device) if needs[1] else None
    grad_b = torch.zeros(vocab, dtype=torch.float32, device=device) if needs[2] else None
    if num_positions == 0 or not any(needs):
        return grad_h, grad_w, grad_b

    target = device_target(device)
    has_entropy = grad_entropy is not None
    per_position = [lse.float(), entropy.float() if has_entropy else None, grad_chosen.float(), grad_lse.float(),
                    grad_entropy.float() if has_entropy else None]
    per_position = [p if p is not None else per_position[0] for p in per_position]
    row_start = contiguous_row_start(rows)
    budget = workspace_budget(workspace_bytes)

    def workspace_for(chosen: KernelConfig) -> tuple[int, torch.Tensor, torch.Tensor | None]:
        chunk = chunk_positions(num_positions, vocab, dim, hidden.element_size(), chosen.block_t, budget,
                                gathered=row_start is None)
        workspace = new_empty((chunk, padded_vocab(vocab, hidden.element_size())), dtype=hidden.dtype,
                              device=device)
        colsum = (new_empty((chunk // chosen.block_t, vocab), dtype=torch.float32, device=device)
                  if needs[2] else None)
        return chunk, workspace, colsum

    def chunk_launch(chosen: KernelConfig, c0: int, c1: int, workspace, colsum) -> Launch:
        return plan_chunk(hidden, weight, rows[c0:c1], targets[c0:c1], transform,
                          tuple(p[c0:c1] for p in per_position), workspace, colsum, has_entropy=has_entropy,
                          config=chosen, target=target,
                          row_start=None if row_start is None else row_start + c0)

    if config is None:
        def first_chunk(chosen: KernelConfig) -> list[Launch]:
            chunk, workspace, colsum = workspace_for(chosen)
            return [chunk_launch(chosen, 0, min(chunk, num_positions), workspace, colsum)]

        config = tuning.pick("backward", target, hidden, weight, backward_default, first_chunk)
    chunk, workspace, colsum = workspace_for(config)
    for c0 in range(0, num_positions, chunk):
        c1 = min(c0 + chunk, num_positions)
        chunk_launch(config, c0, c1, workspace, colsum).run(device)
        g = workspace[: c1 - c0, :vocab]
        if needs[0]:
            matmul_into(grad_h[c0:c1], g, weight, accumulate=False)
        if needs[1]:
            h = hidden[row_start + c0 : row_start + c1] if row_start is not None else hidden[rows[c0:c1]]
            matmul_into(grad_w, g.T, h, accumulate=True)
        if needs[2]:
            grad_b += colsum[: triton.cdiv(c1 - c0, config.block_t)].sum(0)
    return grad_h, grad_w, grad_b
