"""RM-Bench data loading (field by field errors), and ``endokernel rmbench`` end to end on a model saved with
``save_pretrained``: table, JSON, per-example scores, and resuming after an interruption."""

import json

import pytest

from endokernel import EndogenousRewardModel
from endokernel.cli import main
from endokernel.hf.accuracy import rmbench_accuracy
from endokernel.hf.rmbench_data import load_examples

import cases as fx


def write_json(path, records):
    path.write_text(json.dumps(records))
    return str(path)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_domain_comes_from_the_field_else_the_file_name(tmp_path):
    records = fx.handwritten_examples(3)
    records[2]["domain"] = "code"
    examples = load_examples([write_json(tmp_path / "chat_filtered.json", records),
                              write_jsonl(tmp_path / "safety.jsonl", fx.handwritten_examples(1))])
    assert [ex.domain for ex in examples] == ["chat", "chat", "code", "safety"]
    assert [ex.key for ex in examples] == ["chat/100", "chat/101", "code/102", "safety/100"]
    assert examples[0].chosen == tuple(records[0]["chosen"])


@pytest.mark.skipif(not fx.has_rmbench(), reason="RM-Bench data not in ../shared/data/rm-bench")
def test_reads_the_real_chat_file():
    examples = load_examples([str(fx.RMBENCH / "chat_filtered.json")])
    assert len(examples) == 129 and {ex.domain for ex in examples} == {"chat"}


def bad_record(**changes):
    record = fx.handwritten_examples(1)[0]
    for field, value in changes.items():
        if value is None:
            del record[field]
        else:
            record[field] = value
    return record


@pytest.mark.parametrize("record, match", [
    (bad_record(chosen=None), "example 1: missing field 'chosen'"),
    (bad_record(prompt=7), "example 1: field 'prompt' must be a string"),
    (bad_record(rejected=["a", "b"]), "example 1: field 'rejected' must be a list of 3 strings"),
    (bad_record(chosen=["a", "b", 3]), "example 1: field 'chosen' must be a list of 3 strings"),
    (bad_record(domain=""), "example 1: field 'domain'"),
    (bad_record(id=[1]), "example 1: field 'id'"),
    (["not", "an", "object"], "example 1: must be a JSON object"),
    (bad_record(id=100), "share the key 'x/100'"),
])
def test_bad_records_name_the_example_and_field(tmp_path, record, match):
    path = write_json(tmp_path / "x.json", [fx.handwritten_examples(1)[0], record])
    with pytest.raises(ValueError, match=match):
        load_examples([path])


def test_bad_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(fx.handwritten_examples(1)[0]) + "\n{oops\n")
    with pytest.raises(ValueError, match="broken.jsonl: line 2 is not valid JSON"):
        load_examples([str(broken)])
    with pytest.raises(ValueError, match="must hold a JSON list"):
        load_examples([write_json(tmp_path / "object.json", {"prompt": "a"})])
    with pytest.raises(ValueError, match="no examples"):
        load_examples([write_json(tmp_path / "empty.json", [])])
    with pytest.raises(ValueError, match="missing.json: no such file"):
        load_examples([str(tmp_path / "missing.json")])
    with pytest.raises(ValueError, match="not a file"):
        load_examples([str(tmp_path)])


def test_dataset_name_needs_the_datasets_package(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as if not installed
    with pytest.raises(ValueError, match="install the datasets package"):
        load_examples(["some-org/rm-bench"])


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tokenizer = fx.make_tokenizer()
    fx.make_model("qwen3", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def data_file(tmp_path):
    return write_jsonl(tmp_path / "chat.jsonl", fx.handwritten_examples(5))


def rmbench(saved_model, data_file, out, *extra):
    main(["rmbench", "--model", saved_model, "--data", data_file, "--out", str(out), "--dtype", "float32",
          "--device", "cpu", "--save-every", "2", *extra])
    return json.loads(out.read_text())


def read_scores(out):
    lines = out.with_name(out.stem + ".scores.jsonl").read_text().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def test_cli_end_to_end(saved_model, data_file, tmp_path, capsys):
    out = tmp_path / "results.json"
    result = rmbench(saved_model, data_file, out, "--gamma", "0.9")
    printed = capsys.readouterr().out
    assert "| chat | 5 |" in printed and "| overall | 5 |" in printed

    header, records = read_scores(out)
    assert header["settings"]["gamma"] == 0.9
    reward_model = EndogenousRewardModel.from_pretrained(saved_model, dtype="float32", device="cpu")
    for example, record in zip(fx.handwritten_examples(5), records):
        assert record["key"] == f"chat/{example['id']}"
        expected = [reward_model.calculate_reward(example["prompt"], text, gamma=0.9)
                    for text in example["chosen"] + example["rejected"]]
        assert record["chosen"] + record["rejected"] == pytest.approx(expected, rel=1e-4)
    accuracy = rmbench_accuracy([r["chosen"] for r in records], [r["rejected"] for r in records])
    assert result["domains"]["chat"] == {"examples": 5, **accuracy}
    assert result["overall"] == result["domains"]["chat"]


def test_cli_resumes_after_an_interruption(saved_model, data_file, tmp_path, monkeypatch):
    reference = rmbench(saved_model, data_file, tmp_path / "reference.json")

    scored = []  # responses per score() call
    original_score = EndogenousRewardModel.score

    def interrupted_on_second_group(self, prompts, responses, **kwargs):
        if len(scored) == 1:
            raise KeyboardInterrupt  # killed while scoring examples 3-4
        scored.append(len(responses))
        return original_score(self, prompts, responses, **kwargs)

    monkeypatch.setattr(EndogenousRewardModel, "score", interrupted_on_second_group)
    out = tmp_path / "results.json"
    with pytest.raises(KeyboardInterrupt):
        rmbench(saved_model, data_file, out)
    assert len(read_scores(out)[1]) == 2 and not out.exists()
    scores_file = out.with_name("results.scores.jsonl")
    with scores_file.open("a") as file:
        file.write('{"key": "chat/102", "chosen": [1.0')  # a line torn by the kill

    def counting(self, prompts, responses, **kwargs):
        scored.append(len(responses))
        return original_score(self, prompts, responses, **kwargs)

    monkeypatch.setattr(EndogenousRewardModel, "score", counting)
    scored.clear()
    result = rmbench(saved_model, data_file, out)
    assert scored == [12, 6]  # only examples 3, 4 and 5, 6 responses each
    assert [r["key"] for r in read_scores(out)[1]] == [f"chat/{100 + i}" for i in range(5)]
    assert result["domains"] == reference["domains"] and result["overall"] == reference["overall"]

    scored.clear()
    assert rmbench(saved_model, data_file, out) == result and scored == []  # all scored: nothing to do


def test_cli_refuses_to_mix_settings_and_bad_arguments(saved_model, data_file, tmp_path):
    out = tmp_path / "results.json"
    rmbench(saved_model, data_file, out)
    with pytest.raises(SystemExit, match=r"other settings \(beta\)"):
        rmbench(saved_model, data_file, out, "--beta", "0.5")
    with pytest.raises(SystemExit, match="--save-every"):
        main(["rmbench", "--model", saved_model, "--data", data_file, "--save-every", "0"])
    bad = write_json(tmp_path / "bad.json", [bad_record(chosen=None)])
    with pytest.raises(SystemExit, match="example 0: missing field 'chosen'"):
        main(["rmbench", "--model", saved_model, "--data", bad, "--out", str(tmp_path / "other.json")])
