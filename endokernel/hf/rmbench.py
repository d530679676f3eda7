"""``endokernel rmbench``: score RM-Bench's chosen and rejected responses with a causal LM's endogenous reward and
report hard / normal / easy / average accuracy per domain and overall (all examples pooled), as a table and as
JSON (``--out``), with per-example scores in ``<out stem>.scores.jsonl``. Scores are saved as they come: a rerun
with the same ``--out`` and settings resumes, skipping the examples already scored. Under torchrun the ranks
share the scoring (``score(data_parallel=...)``); the first rank reads the data and the scores file and writes."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import TYPE_CHECKING

import torch.distributed as dist
from tqdm import tqdm

from ..distributed.launch import on_first_rank, torchrun_group
from .accuracy import rmbench_accuracy
from .cli_options import add_reward_options, engine_options
from .engines import load_scorer
from .rmbench_data import Example, load_examples
from .score_log import ScoreLog

if TYPE_CHECKING:
    from .scorer import RewardScorer


def scores_path(out: pathlib.Path) -> pathlib.Path:
    return out.with_name(out.stem + ".scores.jsonl")


def evaluate(model: RewardScorer, examples: list[Example], log: ScoreLog | None, *, gamma: float,
             beta: float, batch_size: int | None, max_tokens: int | None, save_every: int,
             data_parallel: dist.ProcessGroup | None = None) -> None:
    """Score ``examples`` (3 chosen and 3 rejected responses each) ``save_every`` examples at a time,
    appending each group's records to ``log``. With ``data_parallel``, every rank of that group runs this and
    shares the scoring; only the rank given a ``log`` writes (and shows progress)."""
    with tqdm(total=len(examples), disable=None if log is not None else True, unit="example", desc="rmbench") as bar:
        for start in range(0, len(examples), save_every):
            group = examples[start : start + save_every]
            prompts = [ex.prompt for ex in group for _ in range(6)]
            responses = [text for ex in group for text in (*ex.chosen, *ex.rejected)]
            scores = model.score(prompts, responses, gamma=gamma, beta=beta, batch_size=batch_size,
                                 max_tokens=max_tokens, progress=False,
                                 data_parallel=data_parallel or False).tolist()
            if log is not None:
                    log.append([{"key": ex.key, "domain": ex.domain, "chosen": scores[6 * i : 6 * i + 3],
                             "rejected": scores[6 * i + 3 : 6 * i + 6]} for i, ex in enumerate(group)])
            bar.update(len(group))


def report(records: list[dict]) -> dict:
    """{'domains': {domain: accuracies}, 'overall': accuracies}, each with its number of examples."""
    def summary(rows: list[dict]) -> dict:
        accuracy = rmbench_accuracy([r["chosen"] for r in rows], [r["rejected"] for r in rows])
        return {"examples": len(rows), **accuracy}

    domains: dict[str, list[dict]] = {}
    for record in records:
        domains.setdefault(record["domain"], []).append(record)
    return {"domains": {name: summary(rows) for name, rows in domains.items()}, "overall": summary(records)}


def format_table(result: dict) -> str:
    """A markdown table of the accuracies, in percent."""
    lines = ["| domain | examples | hard | normal | easy | average |", "|---|---:|---:|---:|---:|---:|"]
    rows = [*result["domains"].items(), ("overall", result["overall"])]
    for name, acc in rows:
        lines.append(f"| {name} | {acc['examples']} | " +
                     " | ".join(f"{100 * acc[k]:.1f}" for k in ("hard", "normal", "easy", "average")) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name or local folder (AutoModelForCausalLM)")
    parser.add_argument("--data", required=True, nargs="+",
                        help="RM-Bench JSON / JSONL files (or a Hugging Face dataset name, with `datasets`)")
    parser.add_argument("--out", default="rmbench_results.json",
                        help="results JSON (default rmbench_results.json); scores go to <stem>.scores.jsonl")
    add_reward_options(parser)
    parser.add_argument("--chat-template", action="store_true", help="format prompts with the chat template")
    parser.add_argument("--score-overlong", action="store_true",
                        help="score sequences longer than max_position_embeddings (default: -inf, as the original)")
    parser.add_argument("--save-every", type=int, default=16, help="examples scored between saves (default 16)")


def run(args: argparse.Namespace) -> None:
    if args.save_every < 1:
        raise SystemExit("endokernel rmbench: --save-every must be >= 1")
    out = pathlib.Path(args.out)
    settings = {name: getattr(args, name) for name in
                ("model", "data", "alpha", "gamma", "beta", "dtype", "chat_template", "score_overlong")}
    log = ScoreLog(scores_path(out), settings)
    with torchrun_group(args.device) as (group, device):
        first = group is None or dist.get_rank(group) == 0

        def remaining() -> tuple[list[Example], list[Example]]:
            examples = load_examples(args.data)
            done = log.load()
            return examples, [ex for ex in examples if ex.key not in done]

        try:
            examples, todo = on_first_rank(remaining, group)  # the ranks agree on what is left to do
            if todo:
                if first:
                    print(f"scoring {len(todo)} of {len(examples)} examples "
                          f"({len(examples) - len(todo)} already in {log.path})")
                if group is not None and args.engine != "hf":
                    raise ValueError("--engine vllm runs one engine: launch it without torchrun "
                                     "(--tensor-parallel-size splits the model)")
                with load_scorer(args.engine, args.model, dtype=args.dtype,
                                 device=device if args.engine == "hf" else args.device, alpha=args.alpha,
                                 chat_template=args.chat_template, score_overlong=args.score_overlong,
                                 **engine_options(args)) as model:
                    evaluate(model, todo, log if first else None, gamma=args.gamma, beta=args.beta,
                             batch_size=args.batch_size, max_tokens=args.max_tokens, save_every=args.save_every,
                             data_parallel=group)
        except ValueError as error:
            raise SystemExit(f"endokernel rmbench: {error}") from error
    if not first:
        return
    done = log.load()
    result = {"settings": settings, "scores_file": str(log.path),
              **report([done[ex.key] for ex in examples])}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_table(result))
    print(f"\nwrote {out} and {log.path}")
