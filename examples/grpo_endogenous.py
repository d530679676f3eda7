"""GRPO with TRL, rewarded by the endogenous reward of the frozen initial policy (arXiv 2506.23235).

A tiny random-weight Qwen3-shaped policy and a byte-level BPE tokenizer trained here on a few sentences (with a
small chat template), so that it runs offline on a CPU in seconds: two optimizer steps on conversational
prompts. The reward model is TRL's reference model (``GRPOConfig.beta > 0`` makes TRL keep a frozen copy of the
initial policy for the KL term): ``EndogenousRewardFunction(lambda: trainer.ref_model, ...)`` scores with it,
so no third copy of the weights is loaded. Everything is written to a temporary folder, removed at the end.

    python examples/grpo_endogenous.py
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download: the model and tokenizer are made here

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from endokernel.rl import EndogenousRewardFunction  # noqa: E402

SENTENCES = [
    "What is the capital of France? The capital of France is Paris.",
    "Name a fruit that is red. An apple is red, and so is a cherry.",
    "How many legs does a cat have? A cat has four legs.",
    "Write a short greeting. Hello, and welcome to the garden!",
    "What colour is the sky on a clear day? The sky is blue.",
    "Give a word that rhymes with moon. Spoon rhymes with moon.",
]
PROMPTS = ["What is the capital of France?", "Name a fruit that is red.", "How many legs does a cat have?",
           "Write a short greeting."]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on SENTENCES, with the chat template's role markers as special tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<pad>", "</s>", "<|user|>", "<|assistant|>"]
    bpe.train_from_iterator(SENTENCES * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_policy(tokenizer: PreTrainedTokenizerFast) -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, tie_word_embeddings=False)
    policy = Qwen3ForCausalLM(config)
    with torch.no_grad():  # logits of standard deviation ~2 (not ~0.1): rewards that differ between completions
        policy.lm_head.weight.normal_(0.0, 2.0 / config.hidden_size**0.5)
    return policy


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = make_tokenizer()
        # saved, so that TRL loads its reference model (the frozen initial policy) from the same folder
        make_policy(tokenizer).save_pretrained(f"{folder}/policy")
        tokenizer.save_pretrained(f"{folder}/policy")
        dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
        args = GRPOConfig(
            output_dir=f"{folder}/out", use_cpu=True, bf16=False, gradient_checkpointing=False, seed=0,
            per_device_train_batch_size=8, num_generations=4, max_completion_length=12, max_steps=2,
            learning_rate=1e-3, beta=0.04, logging_steps=1, report_to="none", save_strategy="no",
            disable_tqdm=True, dataloader_num_workers=0,
        )
        # the reward model is built on the first reward call, when trainer.ref_model exists
        reward = EndogenousRewardFunction(lambda: trainer.ref_model, tokenizer, gamma=1.0, normalize="mean")
        trainer = GRPOTrainer(model=f"{folder}/policy", reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=tokenizer)
        trainer.train()
        assert reward.reward_model.model is trainer.ref_model  # one frozen copy, shared with the KL term
        steps = [log for log in trainer.state.log_history if "rewards/endogenous_reward/mean" in log]
        for log in steps:
            print(f"step {log['step']}: endogenous reward mean {log['rewards/endogenous_reward/mean']:+.3f} "
                  f"(std {log['rewards/endogenous_reward/std']:.3f}), loss {log['loss']:+.4f}")
        print(f"{trainer.state.global_step} GRPO steps done")


if __name__ == "__main__":
    main()
