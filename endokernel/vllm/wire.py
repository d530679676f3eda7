"""What travels between the caller and the pooler inside vLLM's workers, in one place for both sides.

A request is one sequence ``x_0 .. x_{n-1}`` (prompt + response token ids, a vLLM prompt of n tokens) whose
``PoolingParams.extra_kwargs[KEY]`` holds the response start ``P`` and the temperature ``alpha``. The pooler
answers a float32 tensor of shape (n - P, 2): row ``k`` holds, for position ``t = P - 1 + k``, the chosen logit
``L_t[x_{t+1}]`` and the soft value ``alpha * logsumexp(L_t / alpha)``: exactly the packed statistics that
``endokernel._core.finalize`` turns into rewards and log-probs. A (0, 2) answer means a prefix-cache hit
reached past position ``P - 1``, so the hidden states the reward needs were never computed (see ``pooler.py``).
"""

from __future__ import annotations

import math
from typing import Any

KEY = "endokernel"
CHOSEN, LSE = 0, 1  # columns of the answer


def request_options(start: int, alpha: float) -> dict[str, Any]:
    """``PoolingParams.extra_kwargs`` of one sequence whose response starts at ``start``."""
    return {KEY: {"start": int(start), "alpha": float(alpha)}}


def parse_options(extra_kwargs: dict[str, Any] | None, length: int) -> tuple[int, float]:
    """(start, alpha) of a request of ``length`` tokens. Without options (a plain ``token_classify`` call),
    every position after the first is scored at alpha 1: the sequence's log-probs."""
    options = (extra_kwargs or {}).get(KEY)
    if options is None:
        return min(1, length), 1.0
    start, alpha = options.get("start"), options.get("alpha", 1.0)
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= length:
        raise ValueError(f"{KEY}.start must be an int in [1, {length}] (the prompt's length), got {start!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"{KEY}.alpha must be a finite number > 0, got {alpha!r}")
    return start, float(alpha)
