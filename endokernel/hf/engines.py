"""The one place the commands (``score``, ``rmbench``, ``serve``) get their scorer from: ``--engine hf``
(``EndogenousRewardModel``, transformers in this process) or ``--engine vllm`` (``VLLMRewardModel``, a vLLM
engine, optionally split over ``--tensor-parallel-size`` ranks). Both have the ``RewardScorer`` interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .scorer import RewardScorer

ENGINES = ("hf", "vllm")


def load_scorer(engine: str, model: str, *, dtype: str = "auto", device: str | None = None, alpha: float = 1.0,
                chat_template: bool = False, score_overlong: bool = False, tensor_parallel_size: int = 1,
                max_model_len: int | None = None, enforce_eager: bool = False,
                engine_options: dict | None = None) -> RewardScorer:
    """A scorer of ``model`` (a name or local folder) on ``engine``. ``device``: the hf engine's (vLLM runs on
    its platform's devices); ``tensor_parallel_size``, ``max_model_len``, ``enforce_eager``, ``engine_options``
    (further ``vllm.EngineArgs`` fields): the vllm engine's. ValueError names an option the engine does not
    take, or a missing vLLM."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "hf":
        for name, value, default in (("tensor_parallel_size", tensor_parallel_size, 1),
                                     ("max_model_len", max_model_len, None), ("enforce_eager", enforce_eager, False),
                                     ("engine_options", engine_options, None)):
            if value != default:
                raise ValueError(f"{name} is an option of the vllm engine (--engine vllm)")
        from .model import EndogenousRewardModel  # transformers loads only when a command runs

        return EndogenousRewardModel.from_pretrained(model, dtype=dtype, device=device, alpha=alpha,
                                                     chat_template=chat_template, score_overlong=score_overlong)
    if device is not None:
        raise ValueError("device is an option of the hf engine: vLLM runs on its platform's devices "
                         "(--tensor-parallel-size splits the model over them)")
    try:
        from ..vllm.model import VLLMRewardModel
    except ImportError as error:
        raise ValueError(f"the vllm engine needs vLLM: pip install 'endokernel[vllm]' ({error})") from None
    return VLLMRewardModel(model, dtype=dtype, alpha=alpha, chat_template=chat_template,
                           score_overlong=score_overlong, tensor_parallel_size=tensor_parallel_size,
                           max_model_len=max_model_len, enforce_eager=enforce_eager, engine_options=engine_options)
