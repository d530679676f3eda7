"""vLLM's entry points (``pyproject.toml``): ``register`` (group ``vllm.general_plugins``, run by vLLM in every
process it starts) makes the pooling variants known to its model registry; ``io_processor`` (group
``vllm.io_processor_plugins``, name ``endokernel``) names the IO processor that answers ``POST /pooling`` of
vLLM's own server with rewards. Nothing here imports vLLM's model code: classes load when first used."""

from __future__ import annotations


def register() -> None:
    from vllm import ModelRegistry

    from .models import FAMILIES

    for name in FAMILIES:
        ModelRegistry.register_model(name, f"endokernel.vllm.models:{name}")


def io_processor() -> str:
    return "endokernel.vllm.io_processor.EndogenousRewardIOProcessor"  # a dotted qualname
