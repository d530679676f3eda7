"""Throughput of ``endokernel serve`` under OpenRLHF's traffic: one-sample ``/get_reward`` requests (a fresh aiohttp
session each, as OpenRLHF >= 0.9 sends them) from 1, 8 and 64 concurrent clients in a closed loop, against the
same server with batching off (``--no-batching``: one request per forward, as OpenRLHF's ``serve_rm.py`` runs).
Both servers run at once on the same random-weight model and are measured in turn, alternating, on the same
requests (RM-Bench chat prompts with the chat template applied, responses cut to a fixed number of tokens);
their rewards must agree. Requests per second, p50 and p99 latency, and the mean pairs per forward (from the
server's /metrics); then, without HTTP, the model's time per request scored alone and 32 together, which bounds
what batching can gain on this machine. JSON to bench/results/<device>-<date>-serve-throughput.json with the
environment and the load average (other jobs on the machine slow both servers alike, but make times noisier).

Setups (a model and its requests): ``tiny`` and ``small`` (Qwen3-shaped, D=64 with 2 layers and D=256 with 4
layers, V = the BPE trained on the RM-Bench text) with whole prompts and 128-token responses, the same with
``-short`` (prompts cut to 32 tokens, 32-token responses), and ``mid-short``: the Qwen3-0.6B shape (D=1024, 28
layers, 16 heads, 8 KV heads, head dim 128, MLP 3072, V=151936, tied head) with short requests. The servers run
one torch thread each: the client needs the other core, and on a shared machine two threads of one server wait
on each other's time slices (a small model's forward measured 30x slower with two threads than with one there).

    python bench/serve_throughput.py [--setups tiny,small --concurrency 1,8,64 --dtype float32 --repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import aiohttp
import requests
import torch
import transformers

from endokernel import EndogenousRewardModel
from endokernel.bench import tables
from endokernel.bench.environment import describe, slug
from endokernel.hf.rmbench_data import load_examples
from endokernel.hf.tiny import CHAT_TEMPLATE, random_model, tiny_config, train_tokenizer
from endokernel.serve import ServerSettings
from endokernel.serve.encoding import PairEncoder
from endokernel.serve.protocols import openrlhf_rows
from endokernel.serve.schemas import OpenRLHFRequest

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RMBENCH_CHAT = ROOT.parent / "shared" / "data" / "rm-bench" / "chat_filtered.json"
RTOL = {"float32": 1e-5, "bfloat16": 2e-2}  # a request's rewards batched with others vs scored alone
SERVER = ServerSettings(model="-")  # the servers run with the default limits
ON, OFF = "batching", "no batching"


def qwen3_06b(_: int) -> transformers.PretrainedConfig:
    """Qwen3-0.6B's shape, whatever the tokenizer's size: its 151936-row head is part of the cost."""
    return transformers.Qwen3Config(vocab_size=151936, hidden_size=1024, num_hidden_layers=28,
                                    num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                    intermediate_size=3072, max_position_embeddings=40960, tie_word_embeddings=True,
                                    bos_token_id=1, eos_token_id=2, pad_token_id=0)


@dataclasses.dataclass(frozen=True)
class Setup:
    """A model and the requests sent to it."""

    config: Callable[[int], transformers.PretrainedConfig]  # from the tokenizer's size
    prompt_tokens: int | None  # each RM-Bench prompt cut to this many tokens (None: whole)
    response_tokens: int
    requests: dict[int, int]  # per concurrency level
    repeats: int
    threads: int  # each server's: one, so that the client has the other core and no thread waits on another


def tiny(vocab: int) -> transformers.PretrainedConfig:
    return tiny_config("qwen3", vocab, hidden=64, layers=2, max_positions=4096)


def small(vocab: int) -> transformers.PretrainedConfig:
    return tiny_config("qwen3", vocab, hidden=256, layers=4, max_positions=4096)


MANY = {1: 48, 8: 192, 64: 512}
SETUPS = {  # an even number of repeats: each server goes first as often as the other
    "tiny-short": Setup(tiny, 32, 32, MANY, 4, 1),
    "tiny": Setup(tiny, None, 128, MANY, 4, 1),
    "small-short": Setup(small, 32, 32, MANY, 4, 1),
    "small": Setup(small, None, 128, MANY, 4, 1),
    "mid-short": Setup(qwen3_06b, 32, 32, {1: 4, 8: 16, 64: 64}, 1, 1),
}


def payloads(tokenizer, count: int, prompt_tokens: int | None, response_tokens: int) -> list[dict]:
    """``count`` OpenRLHF bodies: an RM-Bench prompt (its first ``prompt_tokens`` tokens) rendered with the chat
    template, then a response of ``response_tokens`` tokens cut from RM-Bench responses and the EOS, as the
    policy would end it."""
    examples = load_examples([str(RMBENCH_CHAT)])
    text = tokenizer(" ".join(r for ex in examples for r in ex.chosen), add_special_tokens=False).input_ids
    bodies = []
    for i in range(count):
        prompt = examples[i % len(examples)].prompt
        if prompt_tokens is not None:
            prompt = tokenizer.decode(tokenizer(prompt, add_special_tokens=False).input_ids[:prompt_tokens])
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)
        start = (i * response_tokens) % (len(text) - response_tokens)
        response = tokenizer.decode(text[start : start + response_tokens]) + tokenizer.eos_token
        bodies.append({"query": [prompt + response], "prompts": [prompt], "labels": [None]})
    return bodies


class Server:
    def __init__(self, model_dir: str, dtype: str, threads: int, *options: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "endokernel.cli", "serve", "--model", model_dir, "--dtype", dtype, "--device",
             "cpu", "--threads", str(threads), "--port", str(self.port), *options], stdout=self.log,
            stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited:\n{pathlib.Path(self.log.name).read_text()}")
            try:
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"the server was not ready after {timeout} s")

    def batches(self) -> tuple[float, float]:
        """(batches scored, pairs scored) so far."""
        text = requests.get(self.url + "/metrics", timeout=30).text
        found = {name: float(re.search(rf"^endokernel_serve_batch_pairs_{name} (\S+)$", text, re.M).group(1))
                 for name in ("count", "sum")}
        return found["count"], found["sum"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(120)
            os.unlink(self.log.name)


async def closed_loop(url: str, bodies: list[dict], concurrency: int) -> tuple[float, list[float], list[float]]:
    """``concurrency`` clients, each posting its next request once the last is answered; (wall seconds,
    latencies, rewards) in request order."""
    latencies, rewards = [0.0] * len(bodies), [0.0] * len(bodies)
    turns = iter(range(len(bodies)))

    async def client() -> None:
        for i in turns:
            start = time.perf_counter()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as session:
                async with session.post(url + "/get_reward", json=bodies[i]) as response:
                    response.raise_for_status()
                    rewards[i] = (await response.json())["rewards"][0]
            latencies[i] = time.perf_counter() - start

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies, rewards


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def model_only(model_dir: str, dtype: str, threads: int, bodies: list[dict], repeats: int) -> dict:
    """The model's time per request in this process, without HTTP: the requests' rows (tokenized as the server
    tokenizes them) scored one per forward, and all in one forward. Their ratio bounds what batching can gain."""
    model = EndogenousRewardModel.from_pretrained(model_dir, dtype=dtype, device="cpu")
    rows = openrlhf_rows(PairEncoder(model), OpenRLHFRequest(
        query=[b["query"][0] for b in bodies], prompts=[b["prompts"][0] for b in bodies]))
    methods = {"alone": lambda: [model.score_encoded([row]) for row in rows],
               "together": lambda: model.score_encoded(rows, max_tokens=len(rows) * max(len(i) for i, _ in rows))}
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for fn in methods.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in methods.items():
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads_before)
    per_row = {name: 1000 * statistics.median(s) / len(rows) for name, s in seconds.items()}
    return {"rows": len(rows), "threads": threads, "repeats": repeats, "seconds": seconds,
            "ms_per_request_alone": per_row["alone"], "ms_per_request_together": per_row["together"],
            "ratio": per_row["alone"] / per_row["together"]}


def measure(name: str, dtype: str, levels: list[int], repeats: int | None, threads: int | None,
            workdir: pathlib.Path) -> dict:
    setup = SETUPS[name]
    repeats, threads, counts = repeats or setup.repeats, threads or setup.threads, setup.requests
    examples = load_examples([str(RMBENCH_CHAT)])
    tokenizer = train_tokenizer([t for ex in examples for t in (ex.prompt, *ex.chosen, *ex.rejected)], 8192,
                                chat_template=CHAT_TEMPLATE)
    config = setup.config(len(tokenizer))
    model_dir = workdir / name
    model = random_model(config, dtype=getattr(torch, dtype))
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    del model  # the servers load their own copies
    print(f"{name}: {params / 1e6:.0f}M parameters, {dtype}; starting both servers", file=sys.stderr, flush=True)
    servers = {ON: Server(str(model_dir), dtype, threads), OFF: Server(str(model_dir), dtype, threads, "--no-batching")}
    try:
        for server in servers.values():
            server.wait_ready()
        bodies = payloads(tokenizer, max(counts[c] for c in levels), setup.prompt_tokens, setup.response_tokens)
        lengths = [len(tokenizer(b["query"][0], add_special_tokens=False).input_ids) for b in bodies]
        runs = []
        for level, concurrency in enumerate(levels):
            work = bodies[: counts[concurrency]]
            samples: dict[str, list[dict]] = {ON: [], OFF: []}
            rewards: dict[str, list[float]] = {}
            load_before = os.getloadavg()
            for repeat in range(repeats):
                order = [ON, OFF] if (level + repeat) % 2 == 0 else [OFF, ON]  # alternate which goes first
                for mode in order:
                    before = servers[mode].batches()
                    wall, latencies, rewards[mode] = asyncio.run(closed_loop(servers[mode].url, work, concurrency))
                    after = servers[mode].batches()
                    samples[mode].append({"seconds": wall, "p50_ms": 1000 * percentile(latencies, 0.5),
                                          "p99_ms": 1000 * percentile(latencies, 0.99),
                                          "pairs_per_forward": (after[1] - before[1]) / max(after[0] - before[0], 1)})
                    print(f"  {name} c={concurrency} {mode}: {len(work) / wall:.1f} requests/s", file=sys.stderr,
                          flush=True)
            difference = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(rewards[ON], rewards[OFF]))
            summary = {mode: {"requests_per_second": len(work) / statistics.median(s["seconds"] for s in runs_),
                              "p50_ms": statistics.median(s["p50_ms"] for s in runs_),
                              "p99_ms": statistics.median(s["p99_ms"] for s in runs_),
                              "pairs_per_forward": statistics.median(s["pairs_per_forward"] for s in runs_)}
                       for mode, runs_ in samples.items()}
            runs.append({"concurrency": concurrency, "requests": len(work), "repeats": repeats,
                         "load_average": {"before": load_before, "after": os.getloadavg()}, "samples": samples,
                         "median": summary,
                         "speedup": summary[ON]["requests_per_second"] / summary[OFF]["requests_per_second"],
                         "max_relative_difference": difference, "agree": difference <= RTOL[dtype]})
        for server in servers.values():
            server.stop()  # idle, but the model-only run should have the machine to itself
        rows = min(32, len(bodies))
        model = model_only(str(model_dir), dtype, threads, bodies[:rows], repeats)
        print(f"  {name} model only, {rows} requests: {model['ratio']:.2f}x faster together", file=sys.stderr)
        return {"setup": name, "model": {"arch": "qwen3", "hidden": config.hidden_size,
                          "layers": config.num_hidden_layers, "vocab": config.vocab_size,
                          "parameters": params, "dtype": dtype, "weights": "random, seed 0",
                          "tokenizer": f"byte-level BPE of {len(tokenizer)} tokens trained on RM-Bench chat"},
                "tokens_per_request": {"prompt_cut_to": setup.prompt_tokens, "response": setup.response_tokens,
                                       "min": min(lengths), "max": max(lengths), "median": statistics.median(lengths)},
                "server": {"max_batch_tokens": SERVER.max_batch_tokens, "max_wait_ms": SERVER.max_wait_ms,
                           "threads": threads},
                "runs": runs, "model_only": model}
    finally:
        for server in servers.values():
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {list(SETUPS)}")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated client counts, of 1, 8, 64")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs per server and level (default: the setup's)")
    parser.add_argument("--threads", type=int, default=None, help="each server's CPU threads (default: the setup's)")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/<device>-<date>-serve-throughput"
                                                     ".json)")
    args = parser.parse_args()
    names = args.setups.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    if not set(names) <= set(SETUPS) or not set(levels) <= {1, 8, 64}:
        raise SystemExit(f"--setups must be of {list(SETUPS)} and --concurrency of 1, 8, 64")
    if not RMBENCH_CHAT.is_file():
        raise SystemExit(f"RM-Bench chat data not found at {RMBENCH_CHAT}")
    with tempfile.TemporaryDirectory() as workdir:
        results = [measure(name, args.dtype, levels, args.repeats, args.threads, pathlib.Path(workdir))
                   for name in names]
    info = describe(torch.device("cpu"))
    RESULTS.mkdir(exist_ok=True)
    path = pathlib.Path(args.out) if args.out else RESULTS / f"{slug(info)}-serve-throughput.json"
    document = {"kind": "serve-throughput", "environment": info, "results": results}
    path.write_text(json.dumps(document, indent=2) + "\n")

    print("\n" + tables.markdown(document))
    print(f"\nwrote {path}")
    if not all(run["agree"] for result in results for run in result["runs"]):
        raise SystemExit(f"batching on and off disagree beyond a relative {RTOL[args.dtype]}")


if __name__ == "__main__":
    main()
