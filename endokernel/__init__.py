"""endokernel: the endogenous reward of a language model, computed by fused kernels that never build logits."""

from .api import TokenStatistics, fused_endogenous_reward, fused_token_logprobs, token_statistics
from .backends.cpp.loader import cpp_available

__all__ = [
    "EndogenousRewardModel",
    "TokenStatistics",
    "cpp_available",
    "fused_endogenous_reward",
    "fused_token_logprobs",
    "token_statistics",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # transformers loads only when the integration is used, so the core imports without it
    if name == "EndogenousRewardModel":
        from .hf.model import EndogenousRewardModel

        return EndogenousRewardModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
