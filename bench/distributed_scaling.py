"""Communication and per-rank compute of ``fused_endogenous_reward`` with process groups, on CPU ranks over gloo:
one process (no group), a vocab-parallel LM head split over 2 ranks (tp) and positions split over 2 ranks (cp),
each rank one thread. Per call and rank: payload bytes received (per token), collective calls, seconds in them
(waiting for the other ranks included), and the rank's compute as the CPU seconds of its thread (robust to
other jobs on a shared machine, unlike wall time, which is recorded too). Writes JSON to
bench/results/<device>-<date>-distributed.json and prints markdown tables, with a bandwidth model for 8 GPUs
in a node and across nodes that scales the measured bytes (a model, not a measurement).

    python bench/distributed_scaling.py [--tokens 1024 --dim 512 --vocab 32768 --repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from endokernel import fused_endogenous_reward
from endokernel.bench import tables
from endokernel.bench.environment import describe, slug
from endokernel.distributed.comm import count_traffic

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ROWS = 2  # sequences per call; each row's response is all but its first token

# Bandwidth model (not measured here): per-GPU figures of an 8 x H100/H200 node (NVLink 4: 450 GB/s each way
# in theory, ~360 GB/s reached by large all_gathers) and of a node-to-node link (a 400 Gb/s InfiniBand NIC per
# GPU: 50 GB/s), with a collective's latency on each; bf16 logits work at 600 TFLOP/s (about 60% of dense peak).
MODEL = {"nvlink_bytes_per_s": 360e9, "nvlink_latency_s": 20e-6, "network_bytes_per_s": 50e9,
         "network_latency_s": 50e-6, "flops_per_s": 600e12, "dim": 4096, "vocab": 151936, "tokens": 32768,
         "ranks": 8, "hidden_bytes": 2}


def _case(tokens: int, dim: int, vocab: int):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(ROWS, tokens // ROWS, dim, generator=g)
    weight = torch.randn(vocab, dim, generator=g) / dim**0.5
    ids = torch.randint(0, vocab, (ROWS, tokens // ROWS), generator=g)
    return hidden, weight, ids


def _split(size: int, parts: int, index: int) -> slice:
    """Block ``index`` of ``size`` split into ``parts`` (the first ones one larger)."""
    base, extra = divmod(size, parts)
    lo = index * base + min(index, extra)
    return slice(lo, lo + base + (index < extra))


def _measure(mode: str, rank: int, world: int, args) -> dict:
    """Median seconds and traffic of a forward, and of a forward + backward, on this rank."""
    torch.set_num_threads(1)
    hidden, weight, ids = _case(args.tokens, args.dim, args.vocab)
    groups = {}
    if mode == "tp":
        weight, groups = weight[_split(args.vocab, world, rank)], {"tp_group": dist.group.WORLD}
    elif mode == "cp":
        hidden, groups = hidden[:, _split(hidden.shape[1], world, rank)], {"cp_group": dist.group.WORLD}
    runs = {"forward": [], "backward": []}
    for repeat in range(args.repeats + 1):  # the first is a warm-up
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        for phase in ("forward", "backward"):
            wall, cpu = time.perf_counter(), time.thread_time()
            with count_traffic() as traffic:
                if phase == "forward":
                    rewards = fused_endogenous_reward(h, w, ids, **groups)
                else:
                    rewards.sum().backward()
            if repeat:
                runs[phase].append((time.perf_counter() - wall, time.thread_time() - cpu, traffic))
    scored = ROWS * (ids.shape[1] - 1)
    out = {}
    for phase, samples in runs.items():
        wall, cpu, traffic = zip(*samples)
        out[phase] = {"wall_seconds": statistics.median(wall), "compute_cpu_seconds": statistics.median(cpu),
                      "collective_seconds": statistics.median(t.seconds for t in traffic),
                      "bytes_per_call": traffic[0].received, "bytes_per_token": traffic[0].received / scored,
                      "collectives": traffic[0].calls}
    return out


def _rank(rank: int, mode: str, world: int, store: str, args, folder: str) -> None:
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=300))
    result = _measure(mode, rank, world, args)
    pathlib.Path(folder, f"{rank}.json").write_text(json.dumps(result))
    if world > 1:
        dist.destroy_process_group()


def run(mode: str, world: int, args) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank, args=(mode, world, os.path.join(folder, "store"), args, folder), nprocs=world)
        return [json.loads(pathlib.Path(folder, f"{rank}.json").read_text()) for rank in range(world)]


def bandwidth_model(measured: dict, dim: int) -> list[dict]:
    """Modelled seconds per call at MODEL's shape on MODEL's ranks: the logits work at the stated FLOP rate, and
    each collective at the stated latency plus the bytes a rank receives over the stated bandwidth. The bytes
    scale the 2-rank measurement (hidden size ``dim``, fp32) by how each collective grows: tp's statistics
    gather by (ranks - 1) per token; tp's hidden-gradient all_reduce, 2 (ranks - 1) / ranks of D values per
    token, by that fraction (1 at 2 ranks) and by D x bytes; cp's gathers, O(rows) values whatever the length,
    by (ranks - 1), and its backward gather of (ranks, rows) values by (ranks - 1) ranks / 2."""
    m, w = MODEL, MODEL["ranks"]
    flops = 2 * m["tokens"] * m["dim"] * m["vocab"]  # the forward's matmul; the backward does two
    per_token = {"forward": (w - 1) * m["tokens"],
                 "backward": 2 * (w - 1) / w * m["tokens"] * m["dim"] * m["hidden_bytes"] / (dim * 4)}
    per_call = {"forward": w - 1, "backward": (w - 1) * w / 2}
    rows = []
    for mode, link in (("tp", "nvlink"), ("cp", "nvlink"), ("cp", "network")):
        for phase, work in (("forward", flops), ("backward", 2 * flops)):
            stats = measured[mode][phase]
            if mode == "tp":
                received = stats["bytes_per_token"] * per_token[phase]
            else:
                received = stats["bytes_per_call"] * per_call[phase]
            comm = stats["collectives"] * m[f"{link}_latency_s"] + received / m[f"{link}_bytes_per_s"]
            compute = work / w / m["flops_per_s"]
            rows.append({"mode": mode, "link": link, "phase": phase, "compute_seconds": compute,
                         "communication_seconds": comm, "bytes_received_per_rank": received,
                         "communication_share": comm / (comm + compute)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per call, in 2 rows (default 1024)")
    parser.add_argument("--dim", type=int, default=512, help="hidden size D (default 512)")
    parser.add_argument("--vocab", type=int, default=32768, help="vocabulary V (default 32768)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (default 3)")
    args = parser.parse_args()

    info = describe(torch.device("cpu"))
    info["cpu_threads"] = 1  # each rank runs one thread
    configs = [("single", 1), ("tp", 2), ("cp", 2)]
    load_before = os.getloadavg()[0]
    results = {}
    for mode, world in configs:
        print(f"{mode} x {world}", file=sys.stderr, flush=True)
        results[mode] = {"ranks": world, "per_rank": run(mode, world, args)}
    load_after = os.getloadavg()[0]

    measured = {mode: {phase: max(entry["per_rank"], key=lambda r: r[phase]["compute_cpu_seconds"])[phase]
                       for phase in ("forward", "backward")} for mode, entry in results.items()}
    modelled = bandwidth_model(measured, args.dim)

    record = {
        "kind": "distributed",
        "environment": info,
        "note": ("CPU ranks over gloo, one thread each, on a shared 2-core machine (other jobs running; load "
                 f"average {load_before:.1f} before, {load_after:.1f} after): bytes are exact, compute is the CPU "
                 "time of each rank's thread, wall and collective seconds include waiting for the CPU"),
        "shape": {"tokens": args.tokens, "rows": ROWS, "dim": args.dim, "vocab": args.vocab, "dtype": "float32",
                  "repeats": args.repeats},
        "results": results,
        "bandwidth_model": {"assumptions": MODEL, "rows": modelled},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{slug(info)}-distributed.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(tables.markdown(record))
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
