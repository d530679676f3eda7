"""Output allocation that tests can poison.

Kernels write every element of their outputs. To prove it, tests switch ``POISON`` on: every buffer the
package allocates for results is then filled with NaN (or the most negative integer) instead of left
uninitialized, and any element a kernel forgets to write shows up as NaN in the result.
"""

from __future__ import annotations

import torch

POISON = False


def new_empty(shape: tuple[int, ...] | int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty``, or a NaN-filled tensor while ``POISON`` is on."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if POISON:
        out.fill_(float("nan") if dtype.is_floating_point else torch.iinfo(dtype).min)
    return out
