"""``endokernel score`` end to end on a model saved with ``save_pretrained``: records written back in input order
with rewards equal to ``EndogenousRewardModel.score``, per-token rewards, conversational records, one whole text
(``--text``), per-record errors for what does not fit the model's positions, resuming after an interruption (also
under torchrun), and bad input."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from endokernel import EndogenousRewardModel
from endokernel.cli import main
from endokernel.hf.original import original_reward_ids
from endokernel.rl import EndogenousRewardFunction

import cases as fx

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_POSITIONS = 256
LONG = ("Tell me a long story.", "Once upon a time " * 80)  # over the saved model's 256 positions


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tokenizer = fx.make_chat_tokenizer()
    fx.make_model("qwen3", len(tokenizer), max_positions=MAX_POSITIONS).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def reward_model(saved_model):
    return EndogenousRewardModel.from_pretrained(saved_model, dtype="float32", device="cpu")


def records():
    """Plain pairs (one empty response, one too long) with extra fields, and one conversational record."""
    plain = [{"id": i, "prompt": p, "response": r, "source": "handwritten"} for i, (p, r) in enumerate(fx.PAIRS)]
    plain.insert(2, {"id": "long", "prompt": LONG[0], "response": LONG[1]})
    chat = {"id": "chat", "prompt": [{"role": "user", "content": "Name a fruit."}],
            "response": [{"role": "assistant", "content": "An apple."}]}
    return plain[:4] + [chat] + plain[4:]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def score(saved_model, data, out, *extra, source="--data"):
    main(["score", "--model", saved_model, source, str(data), "--out", str(out), "--dtype", "float32",
          "--device", "cpu", *extra])
    return read_jsonl(out)


def test_records_come_back_in_order_with_their_rewards(saved_model, reward_model, tmp_path, capsys):
    inputs = records()
    out = tmp_path / "scores.jsonl"
    written = score(saved_model, write_jsonl(tmp_path / "pairs.jsonl", inputs), out, "--per-token",
                    "--gamma", "0.9", "--max-tokens", "300")
    assert "(1 not scored: see their 'error' field)" in capsys.readouterr().out
    assert [{k: v for k, v in w.items() if k not in ("reward", "per_token")} for w in written
            if "error" not in w] == [r for r in inputs if r["id"] != "long"]

    plain = [i for i, r in enumerate(inputs) if isinstance(r["prompt"], str) and r["id"] != "long"]
    rewards, per_token = reward_model.score([inputs[i]["prompt"] for i in plain],
                                            [inputs[i]["response"] for i in plain], gamma=0.9,
                                            return_per_token=True)
    assert [written[i]["reward"] for i in plain] == pytest.approx(rewards.tolist(), rel=1e-6)
    for i, tokens in zip(plain, per_token):
        assert written[i]["per_token"] == pytest.approx(tokens.tolist(), rel=1e-5, abs=1e-5)  # other batches
    (empty,) = [w for w in written if w["response"] == ""]
    assert empty["reward"] == 0.0 and empty["per_token"] == []

    chat = written[4]
    expected = EndogenousRewardFunction(reward_model.model, reward_model.tokenizer, gamma=0.9)(
        [inputs[4]["prompt"]], [inputs[4]["response"]])
    assert chat["reward"] == pytest.approx(expected[0], rel=1e-6) and len(chat["per_token"]) > 3

    long = written[2]
    assert long["id"] == "long" and long["reward"] is None and "per_token" not in long
    assert f"more than the model's {MAX_POSITIONS} positions" in long["error"]
    assert not (tmp_path / "scores.progress.jsonl").exists()


def test_json_list_and_other_field_names(saved_model, reward_model, tmp_path):
    inputs = [{"question": p, "answer": r} for p, r in fx.PAIRS]
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(inputs))
    written = score(saved_model, data, tmp_path / "out.jsonl", "--prompt-field", "question",
                    "--response-field", "answer")
    expected = reward_model.score([p for p, _ in fx.PAIRS], [r for _, r in fx.PAIRS])
    assert [w["reward"] for w in written] == pytest.approx(expected.tolist(), rel=1e-6)
    assert all(set(w) == {"question", "answer", "reward"} for w in written)


def test_a_whole_text_is_one_sequence(saved_model, reward_model, tmp_path):
    text = "The capital of France is Paris. " * 6
    path = tmp_path / "story.txt"
    path.write_text(text)
    (written,) = score(saved_model, path, tmp_path / "text.jsonl", "--per-token", "--gamma", "1", source="--text")
    ids = reward_model.tokenizer(text).input_ids
    assert written["text"] == str(path) and len(written["per_token"]) == len(ids) - 1
    expected = original_reward_ids(reward_model.model, ids, 1, gamma=1.0)
    assert written["reward"] == pytest.approx(expected, rel=1e-4)

    path.write_text(text * 20)  # over the 256 positions: an error, not a crash
    (written,) = score(saved_model, path, tmp_path / "long.jsonl", source="--text")
    assert written["reward"] is None and f"more than the model's {MAX_POSITIONS} positions" in written["error"]


def test_a_prompt_without_tokens_is_a_record_error(tmp_path):
    from tokenizers import processors

    tokenizer = fx.make_tokenizer()
    tokenizer.backend_tokenizer.post_processor = processors.Sequence([])  # no BOS: an empty prompt has no tokens
    folder = tmp_path / "bare"
    fx.make_model("llama", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Hi", "response": "Hello"},
                                                  {"prompt": "", "response": "Hello"}])
    first, second = score(str(folder), data, tmp_path / "out.jsonl")
    assert isinstance(first["reward"], float) and "error" not in first
    assert second["reward"] is None and "gives no tokens" in second["error"]


def test_chat_messages_need_a_chat_template(tmp_path):
    tokenizer = fx.make_tokenizer()  # no chat template
    folder = tmp_path / "base"
    fx.make_model("llama", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = write_jsonl(tmp_path / "pairs.jsonl", [records()[4]])
    with pytest.raises(SystemExit, match="pairs.jsonl holds chat messages, but the tokenizer of .* has no chat"):
        score(str(folder), data, tmp_path / "out.jsonl")


def test_resumes_after_an_interruption(saved_model, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "pairs.jsonl", records())
    reference = score(saved_model, data, tmp_path / "reference.jsonl", "--save-every", "3")

    scored = []  # sequences per score_encoded() call
    original = EndogenousRewardModel.score_encoded

    def interrupted_on_second_group(self, rows, **kwargs):
        if len(scored) == 1:
            raise KeyboardInterrupt  # killed while scoring records 3-5
        scored.append(len(rows))
        return original(self, rows, **kwargs)

    monkeypatch.setattr(EndogenousRewardModel, "score_encoded", interrupted_on_second_group)
    out = tmp_path / "scores.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score(saved_model, data, out, "--save-every", "3")
    progress = tmp_path / "scores.progress.jsonl"
    assert len(progress.read_text().splitlines()) == 1 + 3 and not out.exists()
    with progress.open("a") as file:
        file.write('{"key": 3, "reward": 1.')  # a line torn by the kill

    def counting(self, rows, **kwargs):
        scored.append(len(rows))
        return original(self, rows, **kwargs)

    monkeypatch.setattr(EndogenousRewardModel, "score_encoded", counting)
    scored.clear()
    assert score(saved_model, data, out, "--save-every", "3") == reference
    assert scored == [3, 2]  # records 3-5, then 6-7: only those not saved before
    assert not progress.exists()


@pytest.mark.slow
def test_torchrun_resumes_with_the_results_of_one_process(saved_model, tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "pairs.jsonl", records())
    arguments = ["--per-token", "--save-every", "3"]
    reference = score(saved_model, data, tmp_path / "one.jsonl", *arguments)

    original = EndogenousRewardModel.score_encoded
    calls = []

    def killed_on_second_group(self, rows, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(self, rows, **kwargs)

    monkeypatch.setattr(EndogenousRewardModel, "score_encoded", killed_on_second_group)
    out = tmp_path / "two.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score(saved_model, data, out, *arguments)
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "endokernel",
         "score", "--model", saved_model, "--data", data, "--out", str(out), "--dtype", "float32", "--device", "cpu",
         *arguments], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("scoring 5 of 8 records (3 already in") == 1  # the first rank speaks, once
    written = read_jsonl(out)
    assert [{k: v for k, v in w.items() if k not in ("reward", "per_token")} for w in written] == [
        {k: v for k, v in r.items() if k not in ("reward", "per_token")} for r in reference]
    for got, want in zip(written, reference):
        if want["reward"] is None:
            assert got == want  # the record too long for the model: the same error
        else:
            assert got["reward"] == pytest.approx(want["reward"], rel=1e-5)
            assert got["per_token"] == pytest.approx(want["per_token"], rel=1e-5, abs=1e-5)
    assert not (tmp_path / "two.progress.jsonl").exists()


def test_refuses_to_mix_settings_or_data(saved_model, tmp_path, monkeypatch):
    data = tmp_path / "pairs.jsonl"
    write_jsonl(data, records())
    out = tmp_path / "scores.jsonl"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(EndogenousRewardModel, "score_encoded", killed)
    with pytest.raises(KeyboardInterrupt):  # leaves a progress file with the settings only
        score(saved_model, data, out)
    monkeypatch.undo()
    with pytest.raises(SystemExit, match=r"other settings \(gamma\)"):
        score(saved_model, data, out, "--gamma", "0.5")
    write_jsonl(data, records()[:3])
    with pytest.raises(SystemExit, match=r"other settings \(sha256\)"):
        score(saved_model, data, out)


def bad_records(tmp_path, rows):
    return write_jsonl(tmp_path / "bad.jsonl", rows)


@pytest.mark.parametrize("rows, match", [
    ([{"prompt": "a", "response": "b"}, {"prompt": "a"}], "record 1: missing field 'response'"),
    ([{"prompt": "a", "response": 3}], r"record 0: field 'response' must be a str or a list of messages"),
    ([{"prompt": "a", "response": [{"role": "assistant", "content": "b"}]}],
     "record 0: field 'response' is a list of messages, but .*field 'prompt' is plain text"),
    ([["a", "b"]], "record 0: must be a JSON object"),
    ([], "no records"),
])
def test_bad_records_name_the_record_and_field(saved_model, tmp_path, rows, match):
    with pytest.raises(SystemExit, match=match):
        score(saved_model, bad_records(tmp_path, rows), tmp_path / "out.jsonl")


def test_bad_arguments(saved_model, tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        score(saved_model, tmp_path / "missing.jsonl", tmp_path / "out.jsonl")
    data = write_jsonl(tmp_path / "pairs.jsonl", records())
    with pytest.raises(SystemExit, match="--save-every"):
        score(saved_model, data, tmp_path / "out.jsonl", "--save-every", "0")
    with pytest.raises(SystemExit):  # --data and --text exclude each other (argparse's usage error)
        score(saved_model, data, tmp_path / "out.jsonl", "--text", data)
