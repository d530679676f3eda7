"""``EndogenousRewardFunction``: the endogenous reward of a frozen causal LM as a reward function for RL trainers,
with the call signature of TRL's ``GRPOTrainer`` ``reward_funcs`` (``prompts``, ``completions``, ``**kwargs`` ->
list of floats), usable from any trainer that hands over lists of prompts and completions. Scores through
``EndogenousRewardModel.score_encoded``: length-bucketed batches, no logits, no autograd graph."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any, Union

import torch

from ._core.finalize import discount_weights
from ._core.validate import check_gamma_beta, positive_float

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .hf.conversation import Text
    from .hf.model import EndogenousRewardModel

ModelSource = Union[str, os.PathLike, "PreTrainedModel", Callable[[], "PreTrainedModel"]]
NORMALIZE = (None, "sum", "mean")


class EndogenousRewardFunction:
    """Reward function: the endogenous reward (arXiv 2506.23235) of each completion given its prompt.

    Args:
        model_or_path: a model name or local folder (loaded with ``dtype`` on ``device``); a causal LM already in
            memory, used as is (no copy: pass the frozen initial policy to reward with it); or a function of no
            arguments returning one, called on the first reward call (to share a model made later, such as TRL's
            ``trainer.ref_model``).
        tokenizer: the model's tokenizer; required unless ``model_or_path`` is a name or folder.
        alpha: temperature of the soft value, > 0.
        gamma: discount of the per-token rewards, in (0, 1]. Default 1, as in the paper's derivation (the
            RM-Bench evaluation and ``EndogenousRewardModel`` default to 0.95).
        beta: floor of the discount weights, >= 0.
        normalize: None or 'sum' (the sequence reward R), or 'mean' (the discount-weighted mean of the
            per-token rewards, sum_k w_k r_k / sum_k w_k: R divided by the number of response tokens at gamma 1).
        clip: clip rewards (after ``normalize``) to ``[-clip, clip]`` for a number, ``[low, high]`` for a pair.
        batch_size: most rows of a padded batch (see ``EndogenousRewardModel.score``).
        max_tokens: most padded tokens of a batch.
        chat_template: a Jinja template for conversational inputs in place of the tokenizer's (base models often
            have none).
        chat_template_kwargs: extra template variables, as TRL's ``chat_template_kwargs``.
        dtype: for loading from a name or folder (see ``EndogenousRewardModel.from_pretrained``).
        device: likewise.
        name: the ``__name__`` trainers log the reward under.

    Empty completions get 0.0. A pair longer than the model's ``max_position_embeddings`` raises a ValueError.
    """

    def __init__(self, model_or_path: ModelSource, tokenizer: PreTrainedTokenizerBase | None = None, *,
                 alpha: float = 1.0, gamma: float = 1.0, beta: float = 0.0, normalize: str | None = None,
                 clip: float | tuple[float, float] | None = None, batch_size: int | None = None,
                 max_tokens: int | None = None, chat_template: str | None = None,
                 chat_template_kwargs: Mapping[str, Any] | None = None, dtype: str | torch.dtype = "auto",
                 device: str | torch.device | None = None, name: str = "endogenous_reward") -> None:
        from .hf.batching import check_limits  # transformers loads only when a reward function is made
        from .hf.model import EndogenousRewardModel

        alpha = positive_float("alpha", alpha)
        self.gamma, self.beta = check_gamma_beta(gamma, beta)
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        self.normalize = normalize
        self.clip = _clip_range(clip)
        check_limits(batch_size, max_tokens)
        self.batch_size, self.max_tokens = batch_size, max_tokens
        if chat_template is not None and not isinstance(chat_template, str):
            raise TypeError(f"chat_template must be a str (a Jinja template) or None, "
                            f"got {type(chat_template).__name__}")
        if chat_template_kwargs is not None and not isinstance(chat_template_kwargs, Mapping):
            raise TypeError(f"chat_template_kwargs must be a dict or None, got {type(chat_template_kwargs).__name__}")
        self.chat_template, self.chat_template_kwargs = chat_template, dict(chat_template_kwargs or {})
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self.__name__ = name

        if isinstance(model_or_path, (str, os.PathLike)):
            loaded = EndogenousRewardModel.from_pretrained(model_or_path, dtype=dtype, device=device)
            model_or_path, tokenizer = loaded.model, tokenizer or loaded.tokenizer
        elif tokenizer is None:
            raise TypeError("tokenizer is required when model_or_path is a model (or a function returning one)")
        self._reward_model: EndogenousRewardModel | None = None
        self._make: Callable[[], EndogenousRewardModel] | None = None
        if isinstance(model_or_path, torch.nn.Module):
            self._reward_model = EndogenousRewardModel(model_or_path, tokenizer, alpha)
        elif callable(model_or_path):
            self._make = lambda: EndogenousRewardModel(_called(model_or_path), tokenizer, alpha)
        else:
            raise TypeError("model_or_path must be a model name or folder, a causal LM, or a function returning "
                            f"one, got {type(model_or_path).__name__}")

    @property
    def reward_model(self) -> EndogenousRewardModel:
        """The ``EndogenousRewardModel`` that scores (made on first use for a model given as a function)."""
        if self._reward_model is None:
            self._reward_model = self._make()
        return self._reward_model

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **kwargs: Any) -> list[float]:
        """One float reward per (prompt, completion) pair, in order. Prompts and completions are plain strings
        or lists of chat messages (TRL's conversational format); other keyword arguments (TRL passes
        ``completion_ids``, dataset columns, ``trainer_state``, ...) are ignored."""
        from .hf.conversation import check_pairs, encode_pairs

        prompts, completions = check_pairs(prompts, completions)
        reward_model = self.reward_model
        rows = encode_pairs(reward_model, prompts, completions, chat_template=self.chat_template,
                            chat_template_kwargs=self.chat_template_kwargs)
        for i, (ids, _) in enumerate(rows):
            if reason := reward_model.overlong(len(ids)):
                raise ValueError(f"prompts[{i}] + completions[{i}] is {reason}")
        rewards, per_token = reward_model.score_encoded(
            rows, gamma=self.gamma, beta=self.beta, batch_size=self.batch_size, max_tokens=self.max_tokens,
            return_per_token=True, progress=False)
        if self.normalize == "mean":
            rewards = torch.stack([_weighted_mean(r, len(t), self.gamma, self.beta)
                                   for r, t in zip(rewards, per_token)])
        if self.clip is not None:
            rewards = rewards.clamp(*self.clip)
        return [float(r) for r in rewards]

    def __repr__(self) -> str:
        return (f"EndogenousRewardFunction(name={self.__name__!r}, gamma={self.gamma}, beta={self.beta}, "
                f"normalize={self.normalize!r}, clip={self.clip})")


def _called(make: Callable[[], object]) -> torch.nn.Module:
    model = make()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model_or_path() returned {type(model).__name__}, not a causal LM (TRL's trainer.ref_model "
                        "is None unless GRPOConfig.beta > 0)")
    return model


def _weighted_mean(reward: torch.Tensor, tokens: int, gamma: float, beta: float) -> torch.Tensor:
    """R / sum_k max(gamma**k, beta) over ``tokens`` response tokens; 0.0 for an empty response."""
    if tokens == 0:
        return reward
    return reward / discount_weights(tokens, gamma, beta, reward.device).sum().to(reward.dtype)


def _clip_range(clip: object) -> tuple[float, float] | None:
    if clip is None:
        return None
    if isinstance(clip, Real) and not isinstance(clip, bool):
        low, high = -float(clip), float(clip)
    elif isinstance(clip, Sequence) and len(clip) == 2 and all(
            isinstance(c, Real) and not isinstance(c, bool) for c in clip):
        low, high = float(clip[0]), float(clip[1])
    else:
        raise TypeError(f"clip must be None, a number or a (low, high) pair of numbers, got {clip!r}")
    if math.isnan(low) or math.isnan(high) or not low < high:
        raise ValueError(f"clip must give low < high, got {clip!r}")
    return low, high
