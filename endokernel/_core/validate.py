"""Argument checks shared by the public functions. Each error names the argument at fault."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import NamedTuple

import torch

from ..backends import resolve_backend

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
REFERENCE_DTYPES = FLOAT_DTYPES + (torch.float64,)  # float64 only on the reference and torch backends


def unpack_lm_head(lm_head: torch.Tensor | torch.nn.Module,
                   bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight (V, D), bias (V,) or None) from a tensor or an ``nn.Linear``-like module."""
    if isinstance(lm_head, torch.nn.Module):
        weight = getattr(lm_head, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"lm_head: a module must have a 'weight' tensor, got {type(lm_head).__name__}")
        module_bias = getattr(lm_head, "bias", None)
        if module_bias is not None and bias is not None:
            raise ValueError("bias: lm_head already has a bias; pass it only once")
        return weight, bias if module_bias is None else module_bias
    if not isinstance(lm_head, torch.Tensor):
        raise TypeError(f"lm_head must be a (V, D) tensor or an nn.Linear, got {type(lm_head).__name__}")
    return lm_head, bias


def check_head(weight: torch.Tensor, bias: torch.Tensor | None, hidden: torch.Tensor, backend: str) -> None:
    if weight.dim() != 2:
        raise ValueError(f"lm_head must be 2-D (V, D), got shape {tuple(weight.shape)}")
    if weight.shape[0] == 0:
        raise ValueError("lm_head has no rows (V = 0)")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"lm_head dtype {weight.dtype} differs from hidden dtype {hidden.dtype}; cast one of them")
    allowed = FLOAT_DTYPES if backend == "triton" else REFERENCE_DTYPES
    if hidden.dtype not in allowed:
        raise TypeError(f"hidden: dtype must be one of {allowed} on backend {backend!r}, got {hidden.dtype}")
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden has D={hidden.shape[-1]} features but lm_head has D={weight.shape[1]}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or not bias.dtype.is_floating_point:
            raise TypeError("bias must be a floating-point tensor")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"all tensors must be on one device: {listing}")


def check_integer_tensor(name: str, t: torch.Tensor) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an integer tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {t.dtype}")


def check_token_range(name: str, values: torch.Tensor, vocab: int, allow_negative: bool = False) -> None:
    """``values`` (any shape) must lie in [0, vocab) (or be negative, when allowed)."""
    if values.numel() == 0:
        return
    low, high = int(values.min()), int(values.max())
    if high >= vocab or (low < 0 and not allow_negative):
        raise ValueError(f"{name} must lie in [0, {vocab}) (the LM head's rows), found values in [{low}, {high}]")


def positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def optional_positive_float(name: str, value: object) -> float | None:
    return None if value is None else positive_float(name, value)


def check_gamma_beta(gamma: object, beta: object) -> tuple[float, float]:
    if isinstance(gamma, bool) or not isinstance(gamma, Real) or not (0 < gamma <= 1):
        raise ValueError(f"gamma must lie in (0, 1], got {gamma!r}")
    if isinstance(beta, bool) or not isinstance(beta, Real) or not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    return float(gamma), float(beta)


def row_lengths(attention_mask: torch.Tensor | None, batch: int, seq_len: int, device: torch.device) -> list[int]:
    """Real length of each row from a right-padded 0/1 mask (B, T); all T when there is no mask."""
    if attention_mask is None:
        return [seq_len] * batch
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor, got {type(attention_mask).__name__}")
    if tuple(attention_mask.shape) != (batch, seq_len):
        raise ValueError(f"attention_mask must have the shape of ids {(batch, seq_len)}, "
                         f"got {tuple(attention_mask.shape)}")
    if attention_mask.device != device:
        raise ValueError(f"attention_mask is on {attention_mask.device} but ids is on {device}")
    mask = attention_mask.to(torch.int64)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("attention_mask must hold only 0 and 1")
    lengths = mask.sum(dim=1)
    positions = torch.arange(seq_len, device=device)
    if not bool((mask == (positions[None, :] < lengths[:, None])).all()):
        raise ValueError("attention_mask must be right-padded: each row's ones first, then zeros")
    return lengths.tolist()


def prompt_lengths(prompt_len: torch.Tensor, lengths: list[int]) -> list[int]:
    """Host list of the (B,) response starts, each checked to lie in [1, row length]."""
    values = prompt_len.tolist()
    for b, (p, n) in enumerate(zip(values, lengths)):
        if not 1 <= p <= n:
            raise ValueError(f"prompt_len[{b}] = {p} must lie in [1, {n}] (row {b}'s real length)")
    return values


def prompt_len_tensor(prompt_len: object, batch: int, device: torch.device) -> torch.Tensor:
    """(B,) int64 response starts from an int, a sequence or a tensor; their range is checked with the data."""
    if isinstance(prompt_len, torch.Tensor):
        if prompt_len.dtype.is_floating_point or prompt_len.dtype.is_complex or prompt_len.dtype == torch.bool:
            raise TypeError(f"prompt_len must hold integers, got dtype {prompt_len.dtype}")
        if prompt_len.dim() > 1 or (prompt_len.dim() == 1 and prompt_len.shape[0] != batch):
            raise ValueError(f"prompt_len must be an int or have shape ({batch},), got shape {tuple(prompt_len.shape)}")
        return prompt_len.to(device=device, dtype=torch.int64).expand(batch)
    if isinstance(prompt_len, Integral) and not isinstance(prompt_len, bool):
        return torch.full((batch,), int(prompt_len), dtype=torch.int64, device=device)
    if isinstance(prompt_len, (list, tuple)) and all(
            isinstance(p, Integral) and not isinstance(p, bool) for p in prompt_len):
        if len(prompt_len) != batch:
            raise ValueError(f"prompt_len has {len(prompt_len)} entries for a batch of {batch} rows")
        return torch.tensor([int(p) for p in prompt_len], dtype=torch.int64, device=device)
    raise TypeError(f"prompt_len must be an int or a sequence / tensor of B ints, got {prompt_len!r}")


class Head(NamedTuple):
    """The LM head and logit transforms after their checks, and the concrete backend."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    logit_scale: float | None
    softcap: float | None
    backend: str


def checked_head(hidden: torch.Tensor, lm_head: torch.Tensor | torch.nn.Module, bias: torch.Tensor | None,
                 logit_scale: float | None, softcap: float | None, backend: str) -> Head:
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"hidden must be a tensor, got {type(hidden).__name__}")
    weight, bias = unpack_lm_head(lm_head, bias)
    check_same_device(hidden=hidden, lm_head=weight, bias=bias)
    backend = resolve_backend(backend, hidden.device)
    check_head(weight, bias, hidden, backend)
    return Head(weight, bias, optional_positive_float("logit_scale", logit_scale),
                optional_positive_float("softcap", softcap), backend)


def checked_sequences(hidden: torch.Tensor, ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                      chunked: bool = False):
    """(hidden (B, T, D), ids (B, T), mask (B, T) or None, unbatched) after shape checks. ``chunked``: hidden
    holds a context-parallel chunk of L positions of each row, (B, L, D) (or (L, D)), and ids all T."""
    check_integer_tensor("ids", ids)
    check_same_device(hidden=hidden, ids=ids, attention_mask=attention_mask)
    if ids.dim() not in (1, 2):
        raise ValueError(f"ids must have shape (T,) or (B, T), got {tuple(ids.shape)}")
    if chunked:
        if hidden.dim() != ids.dim() + 1 or hidden.shape[:-2] != ids.shape[:-1]:
            raise ValueError(f"hidden must have shape {tuple(ids.shape[:-1]) + ('L', 'D')} (this rank's L "
                             f"positions of each row of ids), got {tuple(hidden.shape)}")
    elif hidden.dim() != ids.dim() + 1 or hidden.shape[:-1] != ids.shape:
        raise ValueError(f"hidden must have shape {tuple(ids.shape) + ('D',)} to match ids, got {tuple(hidden.shape)}")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a tensor, got {type(attention_mask).__name__}")
        if attention_mask.shape != ids.shape:
            raise ValueError(f"attention_mask must have the shape of ids {tuple(ids.shape)}, "
                             f"got {tuple(attention_mask.shape)}")
    unbatched = ids.dim() == 1
    if unbatched:
        hidden, ids = hidden[None], ids[None]
        attention_mask = None if attention_mask is None else attention_mask[None]
    return hidden, ids, attention_mask, unbatched


def checked_vocab_size(vocab_size: object) -> int | None:
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1):
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    return vocab_size


def checked_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value
