"""The real-model-shaped scoring benchmark on a tiny model: its timings' bookkeeping, the matmul work it counts
per method, and its table."""

import pytest
import torch

pytest.importorskip("transformers")

from endokernel.bench import score_e2e, tables  # noqa: E402
from endokernel.bench.environment import describe  # noqa: E402
from endokernel.hf.tiny import tiny_config, train_tokenizer  # noqa: E402

EXAMPLES = [
    {"prompt": "Name a fruit that is red.", "chosen": [" An apple.", " A cherry, small and sweet.", " Strawberry."],
     "rejected": [" A banana.", " The sky is blue today.", " Grapes are green, mostly."]},
    {"prompt": "What is two plus two?", "chosen": [" Four.", " It is four.", " 2 + 2 = 4"],
     "rejected": [" Five.", " Twenty-two, if you write them side by side.", " Fish."]},
]


def test_run_shape_counts_each_methods_matmul_work(monkeypatch):
    texts = [t for ex in EXAMPLES for t in (ex["prompt"], *ex["chosen"], *ex["rejected"])]
    tokenizer = train_tokenizer(texts * 4, vocab_size=300)
    monkeypatch.setitem(score_e2e.SHAPES, "tiny", lambda: tiny_config("qwen3", len(tokenizer), hidden=32, layers=2))
    run = score_e2e.run_shape("tiny", torch.float32, EXAMPLES, tokenizer, ["original", "score"], 1)

    encoded = [(tokenizer(ex["prompt"]).input_ids, tokenizer(r, add_special_tokens=False).input_ids)
               for ex in EXAMPLES for r in ex["chosen"] + ex["rejected"]]
    assert run["pairs"] == 12 and run["tokens"] == sum(len(p) + len(r) for p, r in encoded)
    # the original runs every pair whole; score each prompt once, its responses padded per chunk
    assert run["decoder_tokens"]["original"] == run["tokens"]
    prompts_once = sum(len(encoded[6 * i][0]) for i in range(len(EXAMPLES)))
    assert run["response_tokens"] + prompts_once <= run["decoder_tokens"]["score"] < run["tokens"]
    linear = 2 * (32 * (4 * 8) + 2 * 32 * (2 * 8) + 4 * 8 * 32 + 3 * 32 * 64) * 2  # q, k, v, o, MLP; 2 layers
    head = 2 * len(tokenizer) * 32
    assert run["matmul_tflop"]["original"] == pytest.approx((linear + head) * run["tokens"] / 1e12)
    assert run["matmul_tflop"]["score"] == pytest.approx(
        (linear * run["decoder_tokens"]["score"] + head * run["response_tokens"]) / 1e12)
    assert run["matmul_floor_speedup"]["score"] == pytest.approx(
        run["matmul_tflop"]["original"] / run["matmul_tflop"]["score"]) and run["matmul_floor_speedup"]["score"] > 1
    assert run["max_relative_difference"]["score"] < 1e-5 and run["finite"]

    document = {"kind": "score-e2e", "environment": describe(torch.device("cpu")), "data": "two examples",
                "tokenizer": "tiny", "settings": {"methods": ["original", "score"], "chunk_examples": 1},
                "runs": [run]}
    assert f"floor {run['matmul_floor_speedup']['score']:.2f}x" in tables.markdown(document)


def test_engine_bench_appends_only_runs_measured_alike(tmp_path):
    from endokernel.bench.engine_e2e import appended

    def result(commit: str, shape: str, chunk: int = 1) -> dict:
        return {"kind": "engine-e2e", "environment": {"git_commit": commit}, "data": "d", "tokenizer": "t",
                "settings": {"chunk_examples": chunk}, "runs": [{"shape": shape}]}

    path = tmp_path / "engine-e2e.json"
    merged = appended(result("abc", "gemma3-270m"), result("abc", "qwen3-0.6b"), path)
    assert [run["shape"] for run in merged["runs"]] == ["gemma3-270m", "qwen3-0.6b"]
    with pytest.raises(SystemExit, match="commit abc"):
        appended(result("abc", "gemma3-270m"), result("def", "qwen3-0.6b"), path)
    with pytest.raises(SystemExit, match="settings"):
        appended(result("abc", "gemma3-270m"), result("abc", "qwen3-0.6b", chunk=2), path)
