"""``--engine vllm`` against ``--engine hf`` on RM-Bench chat, end to end on a CPU: the same random-weight models in
the shape of real ones (``score_e2e.SHAPES``, nothing downloaded), saved to a folder for vLLM to load, scored by
``EndogenousRewardModel.score`` and by ``VLLMRewardModel.score`` in eager mode and with vLLM's torch.compile, and
with torch.compile but without reading the prefix cache (``vllm-unshared``: what prefix caching adds).

    python -m endokernel.bench.engine_e2e [--examples 4] [--shapes gemma3-270m,qwen3-0.6b]
        [--dtypes float32,bfloat16] [--methods hf,vllm-eager,vllm-compiled,vllm-unshared] [--chunk 1]
    python -m endokernel.bench.engine_e2e --table bench/results/<file>.json
    python -m endokernel.bench.engine_e2e --shapes qwen3-0.6b --dtypes float32 --append   # one more run

A sweep of every shape and dtype in one process ran out of 24 GB at its fourth run (its resident memory grows run
by run, the engines being in-process); ``--append`` adds each run from a process of its own to one file.

Every method scores the same pairs in one process; they alternate chunk by chunk (``--chunk`` examples, 6
responses each; the first method of each chunk rotates), so that other work on a shared machine slows them alike.
The vLLM engines run in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): an idle engine then waits on a lock
instead of polling in a process of its own, and one process's resident memory holds every method's peak. Per
method: seconds (sum over chunks), tokens per second, the largest peak extra resident memory of a chunk, the
largest reward difference from the hf engine (relative), the pairs scored again after a cache hit past their
prompt, and the start-up seconds apart (engine and compile); a warm-up on the example after the timed ones runs
first (so that no timed pair is in a prefix cache before its turn). Each engine has a KV cache of 1 GiB. JSON goes
to bench/results/<device>-<date>-engine-e2e.json (``"kind": "engine-e2e"``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import time

import torch

from .._core.memory import measure
from .environment import describe
from .score_e2e import (
    SHAPES,
    alternate,
    relative_difference,
    result_path,
    rmbench_choices,
    rmbench_parser,
    rmbench_text,
)
from .tables import markdown

METHODS = ("hf", "vllm-eager", "vllm-compiled", "vllm-unshared")
KV_CACHE_BYTES = 2**30
MAX_MODEL_LEN = 4096  # above every RM-Bench chat pair; the KV cache need not hold a 32k-40k sequence


def run_shape(shape: str, dtype: torch.dtype, examples: list[dict], warmup_example: dict, tokenizer,
              methods: list[str], chunk: int) -> dict:
    """Every method on every example's six responses, alternating chunk by chunk."""
    from ..hf.model import EndogenousRewardModel
    from ..hf.tiny import random_model
    from ..vllm import VLLMRewardModel

    config = SHAPES[shape]()
    model = random_model(config, dtype=dtype)
    folder = tempfile.mkdtemp(prefix=f"endokernel-{shape}-")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    name = str(dtype).removeprefix("torch.")
    startup, scorers = {}, {}
    for method in methods:
        begin = time.perf_counter()
        if method == "hf":
            scorers[method] = EndogenousRewardModel(model, tokenizer)
        else:
            scorers[method] = VLLMRewardModel(folder, dtype=name, enforce_eager=method == "vllm-eager",
                                              prefix_caching=method != "vllm-unshared", max_model_len=MAX_MODEL_LEN,
                                              engine_options={"kv_cache_memory_bytes": KV_CACHE_BYTES})
        startup[method] = time.perf_counter() - begin
    pairs = [(ex["prompt"], response) for ex in examples for response in ex["chosen"] + ex["rejected"]]
    encoded = scorers["hf"].encode([p for p, _ in pairs], [r for _, r in pairs]) if "hf" in scorers else []

    def call(method: str, part: list[tuple[str, str]]) -> tuple[list[float], float, int]:
        score = scorers[method].score
        return measure(lambda: [float(x) for x in score([p for p, _ in part], [r for _, r in part])],
                       torch.device("cpu"))

    warm = [(warmup_example["prompt"], r) for r in warmup_example["chosen"] + warmup_example["rejected"]]
    warmup = {}
    for method in methods:  # one-time costs (first shapes, compiled graphs) out of the timed chunks
        warmup[method] = call(method, warm)[1]
    load_before = os.getloadavg()
    rewards, seconds, peak = alternate(methods, pairs, chunk, call, f"{shape} {name}")
    rescored = {m: s.rescored for m, s in scorers.items() if hasattr(s, "rescored")}  # warm-up included
    for scorer in scorers.values():
        scorer.close()
    shutil.rmtree(folder, ignore_errors=True)
    tokens = sum(len(ids) for ids, _ in encoded)
    return {
        "shape": shape, "config": {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str))},
        "dtype": name, "examples": len(examples), "pairs": len(pairs), "tokens": tokens,
        "chunk_examples": chunk, "load_average": {"before": load_before, "after": os.getloadavg()},
        "startup_seconds": startup, "warmup_seconds": warmup, "seconds": seconds,
        "tokens_per_second": {m: tokens / seconds[m] for m in methods},
        "speedup_over_hf": {m: seconds["hf"] / seconds[m] for m in methods if m != "hf"},
        "peak_extra_bytes": peak,
        "max_relative_difference": {m: relative_difference(rewards[m], rewards["hf"]) for m in methods if m != "hf"},
        "rescored_after_cache_hits": rescored,
    }


def appended(previous: dict, result: dict, path: pathlib.Path) -> dict:
    """``previous`` (a result file) to which ``result``'s runs will be added; SystemExit naming what differs where
    the two were not measured alike (commit, data, tokenizer, settings)."""
    for key in ("data", "tokenizer", "settings"):
        if previous.get(key) != result[key]:
            raise SystemExit(f"--append: {path} has other {key} ({previous.get(key)!r}, this run {result[key]!r})")
    commit = previous.get("environment", {}).get("git_commit")
    if commit != result["environment"]["git_commit"]:
        raise SystemExit(f"--append: {path} was measured at commit {commit}, this run at "
                         f"{result['environment']['git_commit']}")
    return {**previous, "runs": previous["runs"] + result["runs"]}


def main(argv: list[str] | None = None) -> None:
    parser = rmbench_parser(__doc__, 4, METHODS, 1)
    parser.add_argument("--append", action="store_true",
                        help="add the runs to the day's result file (same commit, data and settings) instead of "
                             "replacing it (a process per run keeps memory low)")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown(json.loads(pathlib.Path(args.table).read_text())))
        return
    shapes, dtypes, methods = rmbench_choices(args, METHODS)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    data, tokenizer = rmbench_text(args.data)
    examples = data[: args.examples]
    import vllm

    info = {**describe(torch.device("cpu")), "vllm": vllm.__version__}
    result = {"kind": "engine-e2e", "environment": info,
              "data": f"rm-bench/chat_filtered.json, first {args.examples} examples x 6 responses",
              "tokenizer": f"byte-level BPE trained on RM-Bench chat, {len(tokenizer)} tokens",
              "settings": {"methods": methods, "chunk_examples": args.chunk, "threads": torch.get_num_threads(),
                           "max_model_len": MAX_MODEL_LEN, "kv_cache_bytes": KV_CACHE_BYTES, "vllm_in_process": True},
              "runs": []}
    path = result_path(args.out_dir, info, "engine-e2e")
    if args.append and path.is_file():
        result = appended(json.loads(path.read_text()), result, path)
    for dtype in dtypes:
        for shape in shapes:  # the file is rewritten after each run: a stopped sweep keeps what it measured
            result["runs"].append(run_shape(shape, getattr(torch, dtype), examples, data[args.examples], tokenizer,
                                            methods, args.chunk))
            path.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
