"""Markdown tables of every kind of results JSON under ``bench/results/``: the benchmark scripts print them and
the docs site renders them (``docs/hooks/results.py``), so no number in a table is ever typed by hand.

Each JSON names its kind in a top-level ``"kind"``; ``markdown(document)`` picks the table for it. Tables start
with the environment line (device, threads, versions, commit, date) that every JSON records.
"""

from __future__ import annotations

from collections.abc import Callable

from .report import environment_line
from .report import markdown as sweep_markdown
from .sweep import Result


def _sweep(document: dict) -> str:
    results = [Result(**{k: row.get(k) for k in Result.__dataclass_fields__}) for row in document["results"]]
    return sweep_markdown(document["environment"], results)


def _rmbench_e2e(document: dict) -> str:
    lines = [environment_line(document["environment"]), "",
             f"{document['data']}, float32, random weights; the methods alternate every few examples", "",
             "| model | tokens | original loop (s) | score (s) | speedup | max relative difference |",
             "|---|---:|---:|---:|---:|---:|"]
    for run in document["runs"]:
        lines.append(f"| {run['model']['name']} | {run['tokens']} | {run['seconds']['original_loop']:.1f} | "
                     f"{run['seconds']['score']:.1f} | {run['speedup']:.2f} | {run['max_relative_difference']:.1e} |")
    return "\n".join(lines)


def _rl_throughput(document: dict) -> str:
    lines = [environment_line(document["environment"]), "",
             "| model | completions | endokernel (responses/s) | naive, full logits (responses/s) | speedup | "
             "load average |", "|---|---:|---:|---:|---:|---:|"]
    for run in document["runs"]:
        fast, naive = run["responses_per_second"].keys()
        median, best = run["responses_per_second"], run["responses_per_second_fastest"]
        lines.append(f"| {run['model']['name']} | {run['completions']} x ~{run['completion_tokens']['target']} | "
                     f"{median[fast]:.1f} ({best[fast]:.1f}) | {median[naive]:.1f} ({best[naive]:.1f}) | "
                     f"{run['speedup']:.2f} ({run['speedup_fastest']:.2f}) | "
                     f"{run['load_average']['before'][0]:.1f} to {run['load_average']['after'][0]:.1f} |")
    lines += ["", "median (fastest) of the repeats, alternating between the methods; load average over 1 minute, "
                  "before and after"]
    return "\n".join(lines)


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


def _distributed(document: dict) -> str:
    results = document["results"]
    lines = [environment_line(document["environment"]), "", document["note"], "",
             "| setup | ranks | phase | bytes / token / rank | collectives | collective s | compute CPU s "
             "(slowest rank) | vs 1 process |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for mode, entry in results.items():
        for phase in ("forward", "backward"):
            slowest = max(entry["per_rank"], key=lambda r: r[phase]["compute_cpu_seconds"])[phase]
            single = results["single"]["per_rank"][0][phase]["compute_cpu_seconds"]
            lines.append(f"| {mode} | {entry['ranks']} | {phase} | {slowest['bytes_per_token']:.1f} | "
                         f"{slowest['collectives']} | {slowest['collective_seconds']:.3f} | "
                         f"{slowest['compute_cpu_seconds']:.3f} | {slowest['compute_cpu_seconds'] / single:.2f} |")
    model = document["bandwidth_model"]
    lines += ["", f"A bandwidth model, not a measurement: the measured bytes scaled to {model['assumptions']['ranks']} "
                  "GPUs (assumptions in the JSON).", "",
              "| setup | link | phase | compute ms | communication ms | received / rank | share |",
              "|---|---|---|---:|---:|---:|---:|"]
    for row in model["rows"]:
        lines.append(f"| {row['mode']} x {model['assumptions']['ranks']} | {row['link']} | {row['phase']} | "
                     f"{1e3 * row['compute_seconds']:.2f} | {1e3 * row['communication_seconds']:.3f} | "
                     f"{_size(row['bytes_received_per_rank'])} | {100 * row['communication_share']:.1f}% |")
    return "\n".join(lines)


def _serve_throughput(document: dict) -> str:
    results = document["results"]
    dtypes = sorted({result["model"]["dtype"] for result in results})
    lines = [environment_line(document["environment"]), "",
             f"one-sample OpenRLHF requests, {', '.join(dtypes)}, random weights; each server with "
             f"{results[0]['server']['threads']} torch thread(s); median of the repeats", "",
             "| setup | model | tokens / request | clients | requests | batching: req/s, p50/p99 ms, pairs/forward "
             "| no batching: req/s, p50/p99 ms | speedup | model alone vs 32 together | load average |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        model = result["model"]
        shape = f"D={model['hidden']}, {model['layers']} layers, V={model['vocab']}"
        for run in result["runs"]:
            on, off = run["median"]["batching"], run["median"]["no batching"]
            lines.append(f"| {result['setup']} | {shape} | {result['tokens_per_request']['median']:g} | "
                         f"{run['concurrency']} | {run['requests']} x {run['repeats']} | "
                         f"{on['requests_per_second']:.1f}, {on['p50_ms']:.0f}/{on['p99_ms']:.0f}, "
                         f"{on['pairs_per_forward']:.1f} | {off['requests_per_second']:.1f}, {off['p50_ms']:.0f}/"
                         f"{off['p99_ms']:.0f} | {run['speedup']:.2f} | {result['model_only']['ratio']:.2f} | "
                         f"{run['load_average']['before'][0]:.1f} to {run['load_average']['after'][0]:.1f} |")
    lines += ["", "model alone: the model's time per request in one process without HTTP, one per forward over "
                  "32 together (the bound on what batching gains); load average over 1 minute, before and after"]
    return "\n".join(lines)


def _score_e2e(document: dict) -> str:
    methods = document["settings"]["methods"]
    others = [m for m in methods if m != "original"]
    lines = [environment_line(document["environment"]), "",
             f"{document['data']}; {document['tokenizer']}; random weights in the shape of real models; the "
             f"methods alternate every {document['settings']['chunk_examples']} example(s), each side in the run's "
             "dtype; floor: the speedup at the matmul floor (the original's matmul work over the method's, "
             "where the run counted it)", "",
             "| shape | dtype | tokens | original loop (s) | " + " | ".join(f"{m} (s, speedup)" for m in others)
             + " | " + " | ".join(f"{m}: max rel. diff" for m in others)
             + " | peak extra MiB (" + " / ".join(methods) + ") | load average |",
             "|---|---|" + "---:|" * (4 + 2 * len(others))]
    for run in document["runs"]:
        cells = [run["shape"], run["dtype"], str(run["tokens"]), f"{run['seconds']['original']:.1f}",
                 *[f"{run['seconds'][m]:.1f} ({run['speedup'][m]:.2f}x{_floor(run, m)})" for m in others],
                 *[f"{run['max_relative_difference'][m]:.1e}" for m in others],
                 " / ".join(f"{run['peak_extra_bytes'][m] / 2**20:.0f}" for m in methods),
                 f"{run['load_average']['before'][0]:.1f} to {run['load_average']['after'][0]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _engine_e2e(document: dict) -> str:
    methods = document["settings"]["methods"]
    others = [m for m in methods if m != "hf"]
    lines = [environment_line(document["environment"]) + f", vLLM {document['environment'].get('vllm', '?')}", "",
             f"{document['data']}; {document['tokenizer']}; random weights in the shape of real models; the methods "
             f"alternate every {document['settings']['chunk_examples']} example(s), each in the run's dtype; "
             "vLLM's engines in the same process; seconds summed over the chunks (start-up and warm-up apart)", "",
             "| shape | dtype | tokens | " + " | ".join(f"{m} s (tokens/s)" for m in methods)
             + " | " + " | ".join(f"{m} vs hf" for m in others)
             + " | " + " | ".join(f"{m}: max rel. diff" for m in others)
             + " | peak extra MiB (" + " / ".join(methods) + ") | start-up s (" + " / ".join(methods)
             + ") | pairs scored again | load average |",
             "|---|---|" + "---:|" * (1 + len(methods) + 2 * len(others) + 4)]
    for run in document["runs"]:
        cells = [run["shape"], run["dtype"], str(run["tokens"]),
                 *[f"{run['seconds'][m]:.1f} ({run['tokens_per_second'][m]:.0f})" for m in methods],
                 *[f"{run['speedup_over_hf'][m]:.2f}x" for m in others],
                 *[f"{run['max_relative_difference'][m]:.1e}" for m in others],
                 " / ".join(f"{run['peak_extra_bytes'][m] / 2**20:.0f}" for m in methods),
                 " / ".join(f"{run['startup_seconds'][m]:.0f}" for m in methods),
                 " / ".join(str(n) for n in run["rescored_after_cache_hits"].values()) or "-",
                 f"{run['load_average']['before'][0]:.1f} to {run['load_average']['after'][0]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _floor(run: dict, method: str) -> str:
    floor = run.get("matmul_floor_speedup", {}).get(method)
    return "" if floor is None else f"; floor {floor:.2f}x"


RENDERERS: dict[str, Callable[[dict], str]] = {
    "sweep": _sweep,
    "rmbench-e2e": _rmbench_e2e,
    "rl-throughput": _rl_throughput,
    "distributed": _distributed,
    "serve-throughput": _serve_throughput,
    "score-e2e": _score_e2e,
    "engine-e2e": _engine_e2e,
}


def markdown(document: dict) -> str:
    """The markdown table(s) of one results JSON, by its ``"kind"``."""
    kind = document.get("kind")
    if kind not in RENDERERS:
        raise ValueError(f"results JSON of unknown kind {kind!r}; known: {', '.join(RENDERERS)}")
    return RENDERERS[kind](document)
