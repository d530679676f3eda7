"""The pooling variants of vLLM's causal LMs: each is its family's ``*ForCausalLM`` (same body, same weights, same
head and logits processor) with ``is_pooling_model = True`` and ``EndogenousPooler`` as its pooler, registered
under its own architecture name (``plugin.register``) and selected with ``runner="pooling"`` and
``hf_overrides={"architectures": [name]}``. Classes are built when vLLM first asks for one
(``models.Qwen3ForEndogenousReward``), so only that family's module is imported.

Only families whose ``compute_logits`` is ``logits_processor(head, hidden_states)`` with the head a vocab-parallel
embedding are listed: the pooler reproduces exactly that (``head.py``)."""

from __future__ import annotations

import importlib

_MODELS = "vllm.model_executor.models"
# our architecture -> (vLLM module, causal LM class); Hugging Face's architecture names map through HF_NAMES
FAMILIES = {
    "Qwen2ForEndogenousReward": ("qwen2", "Qwen2ForCausalLM"),
    "Qwen3ForEndogenousReward": ("qwen3", "Qwen3ForCausalLM"),
    "LlamaForEndogenousReward": ("llama", "LlamaForCausalLM"),
    "MistralForEndogenousReward": ("mistral", "MistralForCausalLM"),
    "Gemma2ForEndogenousReward": ("gemma2", "Gemma2ForCausalLM"),
    "Gemma3ForEndogenousReward": ("gemma3", "Gemma3ForCausalLM"),
    "CohereForEndogenousReward": ("commandr", "CohereForCausalLM"),
    "GraniteForEndogenousReward": ("granite", "GraniteForCausalLM"),
}
HF_NAMES = {base: name for name, (_, base) in FAMILIES.items()}


def pooling_architecture(hf_architectures: list[str] | None) -> str:
    """Our architecture for a checkpoint's ``config.architectures``; ValueError naming the supported ones."""
    for arch in hf_architectures or []:
        if arch in HF_NAMES:
            return HF_NAMES[arch]
    raise ValueError(f"no endogenous-reward variant for architectures {hf_architectures}; supported: "
                     f"{sorted(HF_NAMES)}")


def _variant(name: str) -> type:
    from .pooler import EndogenousPooler

    module, base_name = FAMILIES[name]
    base = getattr(importlib.import_module(f"{_MODELS}.{module}"), base_name)

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        base.__init__(self, vllm_config=vllm_config, prefix=prefix)
        self.pooler = EndogenousPooler(self)

    return type(name, (base,), {"__init__": __init__, "is_pooling_model": True, "__module__": __name__,
                                "__qualname__": name, "__doc__": f"{base_name} whose pooler scores the reward."})


def __getattr__(name: str) -> type:
    if name not in FAMILIES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = globals()[name] = _variant(name)
    return cls
