"""endokernel inside vLLM (the ``vllm`` extra): pooling variants of vLLM's causal LMs whose pooler computes the
endogenous reward's per-position statistics with endokernel's backends (``models.py``, ``pooler.py``),
registered through vLLM's plugin entry points (``plugin.py``); ``VLLMRewardModel``, the scorer interface of
``EndogenousRewardModel`` on a vLLM engine (``model.py``); and the IO processor that makes vLLM's own server
answer ``POST /pooling`` with rewards (``io_processor.py``). ``import endokernel`` never imports this package."""

__all__ = ["VLLMRewardModel"]


def __getattr__(name: str):
    # vLLM loads only when the class is used
    if name == "VLLMRewardModel":
        from .model import VLLMRewardModel

        return VLLMRewardModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
