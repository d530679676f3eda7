"""``endokernel score``: the endogenous reward of each (prompt, response) record of a JSON / JSONL file, or of one
whole text file scored as a single sequence (``--text``), written as JSON Lines in input order: each record
with ``reward`` (and ``per_token`` with ``--per-token``). A record too long for the model's positions gets an
``error`` field and a null reward instead. Results are saved as they come to ``<out stem>.progress.jsonl``: a
rerun with the same arguments resumes, skipping the records already scored; the file goes once ``--out`` is
written. Under torchrun the ranks share the scoring; the first rank reads the input and writes the files."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
from typing import TYPE_CHECKING

import torch.distributed as dist
from tqdm import tqdm

from ..distributed.launch import on_first_rank, torchrun_group
from .cli_options import add_reward_options, engine_options
from .conversation import check_pair, encode_pairs
from .engines import load_scorer
from .records import read_records
from .score_log import ScoreLog

if TYPE_CHECKING:
    from .conversation import Text
    from .scorer import RewardScorer

Pair = tuple["Text", "Text"]


def progress_path(out: pathlib.Path) -> pathlib.Path:
    return out.with_name(out.stem + ".progress.jsonl")


def load_pairs(path: pathlib.Path, prompt_field: str, response_field: str) -> tuple[list[dict], list[Pair]]:
    """The records of a JSON / JSONL file and their (prompt, response) pairs; ValueError names the record."""
    records = read_records(path)
    if not records:
        raise ValueError(f"{path}: no records")
    pairs = []
    for i, record in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: must be a JSON object, got {type(record).__name__}")
        for field in (prompt_field, response_field):
            if field not in record:
                raise ValueError(f"{where}: missing field {field!r}")
        try:
            check_pair(record[prompt_field], record[response_field], f"{where}: field {prompt_field!r}",
                       f"{where}: field {response_field!r}")
        except TypeError as error:
            raise ValueError(str(error)) from None
        pairs.append((record[prompt_field], record[response_field]))
    return records, pairs


def score_records(model: RewardScorer, rows: list[tuple[list[int], int] | str], *, gamma: float,
                  beta: float, batch_size: int | None, max_tokens: int | None, per_token: bool,
                  data_parallel: dist.ProcessGroup | None = None) -> list[dict]:
    """One result per row: ``{"reward"[, "per_token"]}``, or ``{"reward": None, "error"}`` for a row that is an
    encoding error or longer than the model's positions. ``data_parallel``: the ranks sharing the scoring."""
    results: list[dict] = [{} for _ in rows]
    todo = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            results[i] = {"reward": None, "error": row}
        elif reason := model.overlong(len(row[0])):
            results[i] = {"reward": None, "error": reason}
        else:
            todo.append(i)
    rewards, tokens = model.score_encoded([rows[i] for i in todo], gamma=gamma, beta=beta, batch_size=batch_size,
                                          max_tokens=max_tokens, return_per_token=True, progress=False,
                                          data_parallel=data_parallel or False)
    for i, reward, values in zip(todo, rewards.tolist(), tokens):
        results[i] = {"reward": reward, **({"per_token": values.tolist()} if per_token else {})}
    return results


def encode_or_errors(model: RewardScorer, pairs: list[Pair]) -> list[tuple[list[int], int] | str]:
    """``encode_pairs`` of a group of pairs; where it fails (a prompt without tokens), pair by pair, each
    failing pair becoming its error message."""
    try:
        return encode_pairs(model, [p for p, _ in pairs], [r for _, r in pairs])
    except ValueError:
        rows: list[tuple[list[int], int] | str] = []
        for prompt, response in pairs:
            try:
                rows += encode_pairs(model, [prompt], [response])
            except ValueError as error:
                rows.append(f"not scored: {error}")
        return rows


def encode_text(model: RewardScorer, text: str) -> tuple[list[int], int] | str:
    """A whole text as one sequence: tokenized with special tokens, every token after the first scored."""
    ids = model.tokenizer(text)["input_ids"]
    return (list(ids), 1) if ids else "not scored: the text gives no tokens"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name or local folder (AutoModelForCausalLM)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="JSON (a list) or JSONL (.jsonl) file of records, one pair each")
    source.add_argument("--text", help="a text file scored as one sequence (every token after the first)")
    parser.add_argument("--out", required=True, help="output JSONL: each record with its reward, in input order")
    parser.add_argument("--prompt-field", default="prompt",
                        help="record field of the prompt: a string or a list of chat messages (default prompt)")
    parser.add_argument("--response-field", default="response",
                        help="record field of the response: a string or a list of messages (default response)")
    add_reward_options(parser)
    parser.add_argument("--per-token", action="store_true", help="also write each response token's reward")
    parser.add_argument("--chat-template", action="store_true",
                        help="format plain-text prompts as a user turn with the chat template (message lists "
                             "always are)")
    parser.add_argument("--save-every", type=int, default=256, help="records scored between saves (default 256)")


def read_inputs(args: argparse.Namespace, source: pathlib.Path) -> tuple[list[dict], list[Pair] | list[str]]:
    """The input records and what is scored: their (prompt, response) pairs, or with ``--text`` the text."""
    if not source.is_file():
        raise ValueError(f"{source}: no such file")
    if args.text:
        return [{"text": str(source)}], [source.read_text(encoding="utf-8")]
    return load_pairs(source, args.prompt_field, args.response_field)


def evaluate(model: RewardScorer, items: list[Pair] | list[str], todo: list[int], log: ScoreLog | None,
             args: argparse.Namespace, data_parallel: dist.ProcessGroup | None) -> None:
    """Score the items at ``todo`` ``--save-every`` at a time, appending each group's results to ``log``. With
    ``data_parallel``, every rank of that group runs this and shares the scoring; only the rank given a
    ``log`` writes (and shows progress)."""
    with tqdm(total=len(todo), disable=None if log is not None else True, unit="record",
              desc="endogenous reward") as bar:
        for start in range(0, len(todo), args.save_every):
            group = todo[start : start + args.save_every]
            if args.text:
                rows = [encode_text(model, items[i]) for i in group]
            else:
                rows = encode_or_errors(model, [items[i] for i in group])
            results = score_records(model, rows, gamma=args.gamma, beta=args.beta, batch_size=args.batch_size,
                                    max_tokens=args.max_tokens, per_token=args.per_token,
                                    data_parallel=data_parallel)
            if log is not None:
                log.append([{"key": i, **result} for i, result in zip(group, results)])
            bar.update(len(group))


def run(args: argparse.Namespace) -> None:
    if args.save_every < 1:
        raise SystemExit("endokernel score: --save-every must be >= 1")
    out = pathlib.Path(args.out)
    source = pathlib.Path(args.data or args.text)
    log = None  # the first rank's

    def remaining() -> tuple[list[dict], list[Pair] | list[str], list[int]]:
        nonlocal log
        records, items = read_inputs(args, source)
        settings = {"model": args.model, "data": args.data, "text": args.text, "sha256": _sha256(source),
                    **{name: getattr(args, name) for name in ("prompt_field", "response_field", "alpha", "gamma",
                                                              "beta", "dtype", "per_token", "chat_template")}}
        log = ScoreLog(progress_path(out), settings)
        done = log.load()
        return records, items, [i for i in range(len(records)) if i not in done]

    with torchrun_group(args.device) as (group, device):
        first = group is None or dist.get_rank(group) == 0
        try:
            records, items, todo = on_first_rank(remaining, group)  # the ranks agree on what is left to do
            if todo:
                if first:
                    print(f"scoring {len(todo)} of {len(records)} records "
                          f"({len(records) - len(todo)} already in {progress_path(out)})")
                if group is not None and args.engine != "hf":
                    raise ValueError("--engine vllm runs one engine: launch it without torchrun "
                                     "(--tensor-parallel-size splits the model)")
                with load_scorer(args.engine, args.model, dtype=args.dtype,
                                 device=device if args.engine == "hf" else args.device, alpha=args.alpha,
                                 chat_template=args.chat_template, **engine_options(args)) as model:
                    if not args.text and not model.tokenizer.chat_template and any(
                            not isinstance(prompt, str) for prompt, _ in items):
                        raise ValueError(f"{source} holds chat messages, but the tokenizer of {args.model} has no "
                                         "chat template to render them")
                    evaluate(model, items, todo, log if first else None, args, group)
        except ValueError as error:
            raise SystemExit(f"endokernel score: {error}") from error
    if not first:
        return
    done = log.load()
    _write_jsonl(out, [{**record, **_without_key(done[i])} for i, record in enumerate(records)])
    log.path.unlink()
    failed = sum(1 for i in range(len(records)) if "error" in done[i])
    print(f"wrote {len(records)} records to {out}" + (f" ({failed} not scored: see their 'error' field)"
                                                      if failed else ""))


def _without_key(result: dict) -> dict:
    return {name: value for name, value in result.items() if name != "key"}


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_jsonl(path: pathlib.Path, records: list[dict]) -> None:
    """Written to a side file first and renamed, so that ``path`` never holds a partial output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with partial.open("w", encoding="utf-8") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)
    os.replace(partial, path)
