"""The endogenous reward restated from its definition, one token at a time, in float64.

Independent of the package on purpose: it shares no code with ``endokernel``.
"""

from __future__ import annotations

import math

import torch


def logits_at(hidden_row, weight, t, bias, logit_scale, softcap):
    z = weight.double() @ hidden_row[t].double()
    if bias is not None:
        z = z + bias.double()
    if logit_scale is not None:
        z = z * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return z


def row_reward(hidden_row, weight, ids_row, prompt_len, *, alpha=1.0, gamma=0.95, beta=0.0, vocab_size=None,
               bias=None, logit_scale=None, softcap=None):
    """(reward, per-token list) for one row of real length len(ids_row)."""
    n = len(ids_row)
    vocab_size = vocab_size or weight.shape[0]
    per_token = [0.0] * n
    total = 0.0
    for t in range(prompt_len, n):
        k = t - prompt_len
        q = logits_at(hidden_row, weight, t - 1, bias, logit_scale, softcap)[int(ids_row[t])].item()
        if t < n - 1:
            z = logits_at(hidden_row, weight, t, bias, logit_scale, softcap)
            value = alpha * torch.logsumexp(z / alpha, dim=0).item()
        else:
            value = alpha * math.log(vocab_size)
        per_token[t] = q - value
        total += max(gamma**k, beta) * per_token[t]
    return total, per_token
