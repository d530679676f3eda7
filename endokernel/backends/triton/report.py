"""The compile report: every Triton kernel the package launches on a GPU, compiled ahead of time for any
target on any machine (no GPU, no driver), with its registers, spills, shared memory, matrix instructions and
TMA use.

Each kernel is planned by its own launcher (``forward.plan``, ``backward.plan_grad_logits``, ``finalize.plan``) on
meta tensors of a representative shape, so the report compiles exactly the argument types, specializations
(Triton's own ``specialize_impl``), constexprs and options a real launch compiles. NVIDIA: the PTX goes
through Triton's own ptxas run (its bundled ptxas and flags; ``-v --regAllocOptLevel=2`` on Triton 3.9), whose
log gives registers and spills.
AMD: the AMDGCN's ``.vgpr_count`` / ``.vgpr_spill_count`` / ``.sgpr_spill_count``. ``layout='column-major'``
plans the kernels on a transposed hidden and head (pointer loads with a stride along D), whose Triton IR (dumped
beside the PTX) shows the offsets' integer widths. Compiles run in fresh
worker processes (Triton's interpreter, which the test suite turns on, has no compiler) with an empty Triton
cache, in parallel.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import re
import tempfile
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Iterator

TARGETS = ("sm_80", "sm_90a", "sm_100", "gfx942")
DTYPES = ("bf16", "fp16", "fp32")
FLAGS = ("bias", "scale", "softcap", "entropy")
FLAG_SETS = {"plain": (), "all": FLAGS, **{name: (name,) for name in FLAGS}}
SHAPE = dict(tokens=32768, dim=4096, vocab=151936)  # the target shape (Qwen3 vocabulary)
# shared memory per block (opt-in maximum) and multiprocessors, per target family
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 120: 101376,
                "gfx90a": 65536, "gfx942": 65536, "gfx950": 163840}
MULTIPROCESSORS = {80: 108, 90: 132, 100: 148, "gfx942": 304}
LAYOUTS = ("row-major", "column-major")  # of hidden and the LM head


def parse_target(text: str):
    """'sm_80', 'sm_90a', 'sm_100' (or 'sm_100a'), 'gfx942' -> Triton's ``GPUTarget``; the known targets are
    those of ``SHARED_LIMIT``."""
    from triton.backends.compiler import GPUTarget

    match = re.fullmatch(r"sm_(\d+)a?", text)
    if match and int(match[1]) in SHARED_LIMIT:
        return GPUTarget("cuda", int(match[1]), 32)
    if text in SHARED_LIMIT:
        return GPUTarget("hip", text, 64)
    known = ", ".join(f"sm_{k}" if isinstance(k, int) else k for k in SHARED_LIMIT)
    raise ValueError(f"--targets: unknown target {text!r}; known: {known}")


@dataclass(frozen=True)
class Job:
    """One compile: a kernel planned for (target, dtype, flags, config)."""

    kernel: str  # 'forward', 'backward', 'combine' or 'finalize' (the launcher that plans it)
    target: str
    dtype: str
    flags: tuple[str, ...]
    config: dict | None  # KernelConfig fields, None for kernels without one
    default: bool
    rows: str = "contiguous"  # 'gathered': the positions are not one range of hidden's rows
    shape: dict = field(default_factory=lambda: dict(SHAPE))
    layout: str = "row-major"  # 'column-major': hidden and the head are transposed views (pointer loads)


def jobs(targets=TARGETS, dtypes=DTYPES, flag_sets=("plain", "all"), candidates: bool = True,
         shape: dict | None = None, layout: str = "row-major") -> list[Job]:
    """Every compile of the report: per target, the forward and backward kernels for each dtype, flag set and
    config (the default, then the autotuning candidates), the forward's default with gathered positions (sm_90+:
    hidden by pointers, the head by TMA), and the split merge and finalizer kernels once. ``layout``
    'column-major' plans them on transposed hidden and head."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    from . import configs

    shape = dict(shape or SHAPE)
    torch_dtype = {name: dtype for dtype, name in configs.DTYPE_NAMES.items()}
    out = []
    for target_name in targets:
        target = parse_target(target_name)
        for dtype, flag_set in product(dtypes, flag_sets):
            flags = FLAG_SETS[flag_set]
            light = not flags  # and contiguous positions: the forward's lightest epilogue
            plans = [("forward", configs.forward_default(target, torch_dtype[dtype], shape["dim"], light),
                      configs.forward_candidates(target, torch_dtype[dtype], shape["dim"], light)),
                     ("backward", configs.backward_default(target, torch_dtype[dtype], shape["dim"]),
                      configs.backward_candidates(target, torch_dtype[dtype], shape["dim"]))]
            for kernel, default, listed in plans:
                for config in dict.fromkeys([default, *(listed if candidates else [])]):
                    out.append(Job(kernel, target_name, dtype, flags, config.as_dict(), config == default,
                                   shape=shape, layout=layout))
            if configs.supports_tma(target):  # the positions not one range of hidden's rows
                default = configs.forward_default(target, torch_dtype[dtype], shape["dim"])
                out.append(Job("forward", target_name, dtype, flags, default.as_dict(), True, rows="gathered",
                               shape=shape, layout=layout))
        out.append(Job("combine", target_name, "fp32", FLAGS, None, True, shape=shape, layout=layout))
        out.append(Job("finalize", target_name, "fp32", (), None, True, shape=shape, layout=layout))
    return out


def _plan(job: Job):
    """The job's ``Launch`` on meta tensors."""
    import torch

    from ..._core.layout import ResponseLayout
    from ..._core.transform import LogitTransform
    from . import finalize, forward
    from .backward import DEFAULT_WORKSPACE_MIB, first_block, plan_block, workspace_layout
    from .configs import DTYPE_NAMES, KernelConfig

    dtype = {name: dtype for dtype, name in DTYPE_NAMES.items()}[job.dtype]
    target = parse_target(job.target)
    n, dim, vocab = job.shape["tokens"], job.shape["dim"], job.shape["vocab"]

    def meta(*size, dtype=torch.float32):
        return torch.empty(size, dtype=dtype, device="meta")

    def matrix(rows: int, cols: int):  # column-major: strides (1, rows), as a transposed tensor has
        return meta(cols, rows, dtype=dtype).t() if job.layout == "column-major" else meta(rows, cols, dtype=dtype)

    hidden = matrix(n + 1, dim)  # the row after the last position is read by none (as in rewards)
    weight = matrix(vocab, dim)
    rows = meta(n, dtype=torch.int64)
    targets = meta(n, dtype=torch.int64)
    transform = LogitTransform(temperature=0.7, bias=meta(vocab, dtype=dtype) if "bias" in job.flags else None,
                               logit_scale=1.3 if "scale" in job.flags else None,
                               softcap=30.0 if "softcap" in job.flags else None)
    entropy = "entropy" in job.flags
    row_start = 0 if job.rows == "contiguous" else None
    if job.kernel in ("forward", "combine"):
        config = KernelConfig(**job.config) if job.config else forward.forward_default(target, dtype, dim)
        launches = forward.plan(hidden, weight, rows, targets, transform, meta(n), meta(n),
                                meta(n) if entropy else None, config=config, target=target,
                                multiprocessors=MULTIPROCESSORS.get(target.arch, 132), row_start=row_start)
        return launches[0] if job.kernel == "forward" else launches[1]
    if job.kernel == "backward":
        config = KernelConfig(**job.config)
        blocks, workspace, colsum = workspace_layout(n, vocab, dim, dtype, torch.device("meta"), config,
                                                     DEFAULT_WORKSPACE_MIB * 2**20, gathered=row_start is None,
                                                     needs_bias=transform.bias is not None)
        stats = tuple(meta(n) for _ in range(5))
        return plan_block(hidden, weight, rows, targets, transform, stats, workspace, colsum,
                          *first_block(blocks, n, vocab), has_entropy=entropy, config=config, target=target,
                          row_start=row_start)
    batch, seq_len = 8, n // 8
    layout = ResponseLayout(batch=batch, seq_len=seq_len, num_positions=n, prompt_len=meta(batch, dtype=torch.int64),
                            lengths=meta(batch, dtype=torch.int64), starts=meta(batch + 1, dtype=torch.int64),
                            response_pos=rows, rows=rows, targets=targets)
    return finalize.plan(meta(n), meta(n), layout, meta(seq_len, dtype=torch.float64), 11.9, meta(batch),
                         meta(batch, seq_len))


def _source(launch, target):
    """Triton's ``ASTSource`` and compile options of a ``Launch``, specialized as the JIT specializes it."""
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import native_specialize_impl

    from .runtime import COMPILE_OPTIONS

    fn = launch.kernel
    backend = make_backend(target)
    signature, constexprs, attrs = {}, {}, {}
    values = dict(zip(fn.arg_names, launch.args))
    values.update({k: v for k, v in launch.meta.items() if k not in COMPILE_OPTIONS})
    for index, (name, param) in enumerate(zip(fn.arg_names, fn.params)):
        value = values[name]
        if param.is_constexpr:
            signature[name], constexprs[name] = "constexpr", value
            continue
        kind, key = native_specialize_impl(backend, value, False, True, True)
        signature[name] = kind
        if kind == "constexpr":  # ints equal to 1 (and None) are specialized into constants
            constexprs[name] = value
        elif isinstance(key, str):
            attrs[(index,)] = backend.parse_attr(key)
    options = {k: launch.meta[k] for k in COMPILE_OPTIONS if k in launch.meta}
    return ASTSource(fn, signature, constexprs, attrs), options


def _number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    return int(match[1]) if match else 0


def _compile(src, target, options) -> tuple:
    """(compiled kernel, ptxas -v log): Triton's own ptxas run (its bundled ptxas and flags: -v,
    --regAllocOptLevel=2 on Triton 3.9) prints its log where ``dump_ptxas_log`` is set. Each compile gets an
    empty Triton cache of its own, so that two jobs compiling the same kernel (configs that differ only in
    launch-time values, e.g. ``programs_per_sm``) both run ptxas."""
    import triton
    from triton import knobs

    log = io.StringIO()
    knobs.nvidia.dump_ptxas_log = target.backend == "cuda"
    with tempfile.TemporaryDirectory(dir=os.environ.get("TRITON_CACHE_DIR")) as cache:
        saved = os.environ.get("TRITON_CACHE_DIR")
        os.environ["TRITON_CACHE_DIR"] = cache
        try:
            with contextlib.redirect_stdout(log):
                kernel = triton.compile(src, target=target, options=options)
        finally:
            if saved is not None:
                os.environ["TRITON_CACHE_DIR"] = saved
    return kernel, log.getvalue()


def _metrics(kernel, target, log: str) -> dict:
    shared = int(kernel.metadata.shared)
    if target.backend == "cuda":
        ptx = kernel.asm["ptx"]
        if "Used" not in log:  # ptxas did not run: Triton found the kernel in a cache
            raise RuntimeError("no ptxas log to read registers and spills from (a cached compile?)")
        return dict(
            registers=_number(r"Used (\d+) registers", log),
            spill_bytes=_number(r"(\d+) bytes spill stores", log),
            spill_loads_bytes=_number(r"(\d+) bytes spill loads", log),
            stack_bytes=_number(r"(\d+) bytes stack frame", log),
            shared_bytes=shared,
            mma=dict(wgmma=ptx.count("wgmma.mma_async"), tcgen05=ptx.count("tcgen05.mma"),
                     mma_sync=len(re.findall(r"\bmma\.sync", ptx))),
            tma="cp.async.bulk.tensor" in ptx,
        ), ptx
    amdgcn = kernel.asm["amdgcn"]
    return dict(
        registers=_number(r"\.vgpr_count:\s+(\d+)", amdgcn),
        agpr_count=_number(r"\.agpr_count:\s+(\d+)", amdgcn),
        spill_bytes=_number(r"\.vgpr_spill_count:\s+(\d+)", amdgcn),
        sgpr_spills=_number(r"\.sgpr_spill_count:\s+(\d+)", amdgcn),
        shared_bytes=shared,
        mma=dict(v_mfma=len(re.findall(r"\bv_mfma", amdgcn))),
        tma=False,
    ), amdgcn


def compile_job(job: Job, dump_dir: str | None) -> dict:
    """One report row (``error`` set and metrics missing when the compile fails)."""
    target = parse_target(job.target)
    launch = _plan(job)
    name = launch.kernel.fn.__name__ if hasattr(launch.kernel, "fn") else launch.kernel.__name__
    row = dict(kernel=name, role={"forward": "forward", "backward": "backward"}.get(job.kernel, "other"),
               target=job.target, dtype=job.dtype, flags=list(job.flags), rows=job.rows, layout=job.layout,
               config=job.config or {k: v for k, v in launch.meta.items() if k.isupper() and k.startswith("BLOCK")},
               default=job.default, gemm_by_library=job.kernel == "backward", error=None)
    try:
        src, options = _source(launch, target)
        kernel, log = _compile(src, target, options)
        metrics, text = _metrics(kernel, target, log)
    except Exception as error:  # the report records any compile failure as a row; the CI test fails on it
        row["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return row
    row.update(metrics)
    row["shared_limit"] = SHARED_LIMIT.get(target.arch)
    row["dump"] = row["dump_ttir"] = None
    if dump_dir is not None:
        suffix = "ptx" if target.backend == "cuda" else "amdgcn"
        flags = "-".join(job.flags) or "plain"
        config = "default" if job.default else "x".join(str(v) for v in (job.config or {}).values())
        layout = "" if job.layout == "row-major" else f"-{job.layout}"
        path = Path(dump_dir) / f"{name}-{job.target}-{job.dtype}-{flags}-{job.rows}{layout}-{config}.{suffix}"
        path.write_text(text)
        path.with_suffix(".ttir").write_text(kernel.asm["ttir"])  # the offsets' integer types, before lowering
        row["dump"], row["dump_ttir"] = str(path), str(path.with_suffix(".ttir"))
    return row


def _worker_init(cache_dir: str) -> None:
    os.environ["TRITON_CACHE_DIR"] = cache_dir  # nothing cached across runs: every compile is a real one
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning


def _run_job(args: tuple[Job, str | None]) -> dict:
    return compile_job(*args)


@contextlib.contextmanager
def _compiling_environment() -> Iterator[None]:
    """Workers start with TRITON_INTERPRET=0, whatever this process runs under."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def compile_report(targets=TARGETS, dtypes=DTYPES, flag_sets=("plain", "all"), *, candidates: bool = True,
                   dump_dir: str | os.PathLike | None = None, processes: int | None = None,
                   shape: dict | None = None, layout: str = "row-major") -> list[dict]:
    """Compile every kernel for every target (see ``jobs``) and return one row per compile: ``kernel``, ``role``,
    ``target``, ``dtype``, ``flags``, ``rows``, ``layout``, ``config``, ``default``, ``registers``,
    ``spill_bytes`` (ptxas spill stores; AMD: the VGPR spill count, ``sgpr_spills`` beside it),
    ``shared_bytes`` and ``shared_limit``, ``mma`` (instruction counts), ``tma``, ``gemm_by_library``, ``dump``
    and ``dump_ttir`` (the PTX / AMDGCN and the Triton IR written into ``dump_dir``) and ``error`` (None, or why
    the compile failed)."""
    todo = jobs(tuple(targets), tuple(dtypes), tuple(flag_sets), candidates, shape, layout)
    if dump_dir is not None:
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        dump_dir = str(dump_dir)
    processes = processes or max(1, min(len(todo), os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="endokernel-triton-cache-") as cache_dir, _compiling_environment():
        context = multiprocessing.get_context("spawn")
        with context.Pool(processes, initializer=_worker_init, initargs=(cache_dir,)) as pool:
            return pool.map(_run_job, [(job, dump_dir) for job in todo], chunksize=1)


def problems(rows: list[dict]) -> list[str]:
    """What the CI test rejects: compile errors, spills or shared memory over the limit in a default config,
    a bf16 sm_90a forward or backward kernel without wgmma, a gfx942 forward kernel without MFMA."""
    found = []
    for row in rows:
        where = f"{row['kernel']} {row['target']} {row['dtype']} {'+'.join(row['flags']) or 'plain'} {row['rows']}"
        if row["error"]:
            found.append(f"{where}: compile error {row['error']}")
            continue
        if row["default"] and row["spill_bytes"]:
            found.append(f"{where}: {row['spill_bytes']} spill in the default config")
        if row["default"] and row.get("sgpr_spills"):
            found.append(f"{where}: {row['sgpr_spills']} SGPR spills in the default config")
        if row["shared_limit"] is not None and row["shared_bytes"] > row["shared_limit"]:
            found.append(f"{where}: {row['shared_bytes']} bytes of shared memory > {row['shared_limit']}")
        if row["target"] == "sm_90a" and row["dtype"] == "bf16" and row["role"] in ("forward", "backward"):
            if not row["mma"]["wgmma"]:
                found.append(f"{where}: no wgmma")
        if row["target"] == "gfx942" and row["role"] == "forward" and not row["mma"]["v_mfma"]:
            found.append(f"{where}: no MFMA")
    return found


def table(rows: list[dict]) -> str:
    """A readable table of the rows."""
    header = ("kernel", "target", "dtype", "flags", "rows", "config", "dflt", "regs", "spill", "smem", "mma", "tma")
    lines = [header]
    for row in rows:
        config = row["config"]
        label = ("x".join(str(config[k]) for k in ("block_t", "block_v", "block_d")) +
                 f" w{config['num_warps']} s{config['num_stages']}" +
                 (f" split{config['epilogue_split']}" if config.get("epilogue_split", 1) > 1 else "")
                 if "block_t" in config else " ".join(f"{k}={v}" for k, v in config.items()))
        if row["error"]:
            lines.append((row["kernel"], row["target"], row["dtype"], "+".join(row["flags"]) or "plain", row["rows"],
                          label, "y" if row["default"] else "", "ERROR", row["error"][:40], "", "", ""))
            continue
        mma = " ".join(f"{k}:{v}" for k, v in row["mma"].items() if v) or "-"
        spill = str(row["spill_bytes"]) + (f"+{row['sgpr_spills']}s" if row.get("sgpr_spills") else "")
        lines.append((row["kernel"], row["target"], row["dtype"], "+".join(row["flags"]) or "plain", row["rows"],
                      label, "y" if row["default"] else "", str(row["registers"]), spill,
                      str(row["shared_bytes"]), mma, "y" if row["tma"] else ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)
