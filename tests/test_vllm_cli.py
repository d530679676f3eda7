"""``endokernel score`` and ``endokernel rmbench`` with ``--engine vllm``: the same files as ``--engine hf``
(rewards within 1e-5 relative in float32), per-record errors and the chat template included; options of the
other engine refused."""

import json

import pytest

from endokernel.cli import main

import cases as fx
import vllm_cases as vx

LONG = {"id": "long", "prompt": "Tell me a long story.", "response": "Once upon a time " * 80}  # > 256 positions


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return vx.save_model(tmp_path_factory.mktemp("llama"), "llama")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_files_equal_across_engines(model_dir, tmp_path):
    records = [{"id": i, "prompt": p, "response": r} for i, (p, r) in enumerate(fx.PAIRS)] + [LONG]
    records.append({"id": "chat", "prompt": [{"role": "user", "content": "Name a fruit."}],
                    "response": [{"role": "assistant", "content": "An apple."}]})
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    written = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / f"{engine}.jsonl"
        extra = ["--device", "cpu"] if engine == "hf" else ["--engine", "vllm", "--enforce-eager"]
        main(["score", "--model", model_dir, "--data", str(data), "--out", str(out), "--dtype", "float32",
              "--per-token", "--chat-template", "--gamma", "0.9", *extra])
        written[engine] = read_jsonl(out)
    hf, vllm = written["hf"], written["vllm"]
    assert [r["id"] for r in vllm] == [r["id"] for r in records]
    assert [r.get("error") for r in vllm] == [r.get("error") for r in hf]
    assert "more than the model's 256 positions" in vllm[-2]["error"]
    for got, want in zip(vllm, hf):
        if want["reward"] is not None:
            assert got["reward"] == pytest.approx(want["reward"], rel=1e-5)
            assert got["per_token"] == pytest.approx(want["per_token"], rel=1e-5, abs=1e-5)


def test_rmbench_equal_across_engines(model_dir, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in fx.handwritten_examples(5)))
    results = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / f"{engine}.json"
        extra = ["--device", "cpu"] if engine == "hf" else ["--engine", "vllm", "--enforce-eager"]
        main(["rmbench", "--model", model_dir, "--data", str(data), "--out", str(out), "--dtype", "float32",
              "--alpha", "0.8", *extra])
        scores = [json.loads(line) for line in out.with_name(out.stem + ".scores.jsonl").read_text().splitlines()]
        results[engine] = json.loads(out.read_text()), scores[1:]
    (hf_result, hf_scores), (vllm_result, vllm_scores) = results["hf"], results["vllm"]
    assert vllm_result["overall"] == hf_result["overall"]
    for got, want in zip(vllm_scores, hf_scores, strict=True):
        assert got["chosen"] + got["rejected"] == pytest.approx(want["chosen"] + want["rejected"], rel=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--engine", "vllm", "--device", "cpu"], "device is an option of the hf engine"),
    (["--tensor-parallel-size", "2"], "tensor_parallel_size is an option of the vllm engine"),
])
def test_options_of_the_other_engine_are_refused(model_dir, tmp_path, argv, message):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(fx.handwritten_examples(1)[0]) + "\n")
    with pytest.raises(SystemExit, match=message):
        main(["rmbench", "--model", model_dir, "--data", str(data), "--out", str(tmp_path / "r.json"), *argv])
