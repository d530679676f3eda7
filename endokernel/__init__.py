"""endokernel: the endogenous reward of a language model, computed by fused kernels that never build logits."""

from .api import TokenStatistics, fused_endogenous_reward, fused_token_logprobs, token_statistics

__all__ = ["TokenStatistics", "fused_endogenous_reward", "fused_token_logprobs", "token_statistics"]
__version__ = "0.1.0"
