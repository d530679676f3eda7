"""Data-parallel scoring: shards balanced by token count, ``score(data_parallel=...)`` on gloo ranks forked from
the test, and ``torchrun -m endokernel rmbench`` resuming a run, against one process."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from endokernel import EndogenousRewardModel
from endokernel.cli import main
from endokernel.distributed.data_parallel import shard_by_tokens
from endokernel.distributed.launch import on_first_rank

import cases as fx
import ranks

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_shards_balance_tokens_and_keep_input_order():
    lengths = [10, 1, 9, 2, 8, 3, 7, 4]
    shards = shard_by_tokens(lengths, 3)
    assert sorted(i for shard in shards for i in shard) == list(range(len(lengths)))
    assert all(shard == sorted(shard) for shard in shards)
    totals = [sum(lengths[i] for i in shard) for shard in shards]
    assert max(totals) - min(totals) <= 2, totals  # 44 tokens: 15, 15, 14 is the best split
    assert shard_by_tokens([5, 5], 3) == [[0], [1], []]


@pytest.fixture(scope="module")
def reward_model():
    tokenizer = fx.make_tokenizer()
    return EndogenousRewardModel(fx.make_model("llama", len(tokenizer)), tokenizer)


def test_score_data_parallel_matches_one_process(reward_model):
    pairs = fx.sample_pairs(9) + [("Say nothing.", "")]
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    expected, expected_tokens = reward_model.score(prompts, responses, max_tokens=300, return_per_token=True)

    def rank_fn(rank, world):
        return reward_model.score(prompts, responses, max_tokens=300, return_per_token=True, data_parallel=True)

    results = ranks.run(2, rank_fn)
    for rewards, per_token in results:
        assert rewards.dtype == torch.float32 and rewards.shape == expected.shape
        assert torch.allclose(rewards, expected, rtol=1e-5, atol=0)
        assert [t.shape for t in per_token] == [t.shape for t in expected_tokens]
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(per_token, expected_tokens))
    assert torch.equal(results[0][0], results[1][0])


def test_score_data_parallel_refuses_different_inputs(reward_model):
    with pytest.raises(ValueError, match="data_parallel needs an initialised torch.distributed process group"):
        reward_model.score(["a"], ["b"], data_parallel=True)

    def rank_fn(rank, world):
        response = ["An apple.", "A pear."][rank]
        return [ranks.error_of(lambda a=argument: reward_model.score(["Name a fruit."], [response], data_parallel=a))
                for argument in ("world", True)]

    for found in ranks.run(2, rank_fn):
        assert found[0] == ("TypeError",
                            "data_parallel must be a bool or a torch.distributed ProcessGroup, got 'world'")
        assert found[1][0] == "ValueError" and "were given different inputs" in found[1][1]


def test_the_first_rank_reads_and_its_error_stops_every_rank():
    def read(rank):
        if rank:
            raise AssertionError("only the first rank reads")
        return ["chat/0", "chat/1"]

    def refuse(rank):
        if rank:
            raise AssertionError("only the first rank reads")
        raise ValueError("results.scores.jsonl holds scores computed with other settings (beta)")

    def rank_fn(rank, world):
        return (on_first_rank(lambda: read(rank), dist.group.WORLD),
                ranks.error_of(lambda: on_first_rank(lambda: refuse(rank), dist.group.WORLD)))

    for todo, error in ranks.run(3, rank_fn):
        assert todo == ["chat/0", "chat/1"]
        assert error == ("ValueError", "results.scores.jsonl holds scores computed with other settings (beta)")


def rmbench_args(model, data, out):
    return ["rmbench", "--model", model, "--data", data, "--out", str(out), "--dtype", "float32", "--device", "cpu",
            "--save-every", "2", "--gamma", "0.9"]


def read_scores(out):
    lines = out.with_name(out.stem + ".scores.jsonl").read_text().splitlines()
    return lines[0], [json.loads(line) for line in lines[1:]]


@pytest.mark.slow
def test_torchrun_rmbench_resumes_with_the_scores_of_one_process(tmp_path):
    tokenizer = fx.make_tokenizer()
    model = tmp_path / "model"
    fx.make_model("qwen3", len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    records = ([dict(ex, id=i) for i, ex in enumerate(fx.rmbench_chat()[:5])] if fx.has_rmbench()
               else fx.handwritten_examples(5))
    data = tmp_path / "chat.json"
    data.write_text(json.dumps(records))

    one = tmp_path / "one.json"
    main(rmbench_args(str(model), str(data), one))
    header, expected = read_scores(one)

    two = tmp_path / "two.json"  # as if interrupted after the first example
    two.with_name("two.scores.jsonl").write_text(header + "\n" + json.dumps(expected[0]) + "\n")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "endokernel",
         *rmbench_args(str(model), str(data), two)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("scoring 4 of 5 examples (1 already in") == 1  # the first rank speaks, once

    _, scores = read_scores(two)
    assert [r["key"] for r in scores] == [r["key"] for r in expected]  # each example written once, in order
    for got, want in zip(scores, expected):
        assert got["chosen"] + got["rejected"] == pytest.approx(want["chosen"] + want["rejected"], rel=1e-5)
    result, reference = json.loads(two.read_text()), json.loads(one.read_text())
    assert result["overall"] == reference["overall"] and result["domains"] == reference["domains"]
