"""Optional autotuning of the forward and backward kernel configurations on the user's GPU.

Off by default: the deterministic defaults of ``configs`` are used and results are bitwise the same in every
process. ``set_autotune(True)`` or ``ENDOKERNEL_AUTOTUNE=1`` turns it on: the first call for a (kernel, GPU
name, dtype, D, V bucket) times every candidate of ``configs`` on the call's own inputs, keeps the fastest,
and caches it on disk (``ENDOKERNEL_CACHE_DIR``, default ``~/.cache/endokernel``, file ``triton-autotune.json``)
for every later call and process. The chosen configuration can change the result's bits (see ``configs``);
once cached it no longer changes. A candidate that does not compile for this GPU is skipped, as Triton's own
autotuner skips one (``compile_failures``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from .configs import DTYPE_NAMES, KernelConfig
from .runtime import Launch, on_device

_enabled: bool | None = None  # set_autotune's choice; None: the environment decides


def set_autotune(enabled: bool | None) -> None:
    """Turn autotuning on or off for this process (None: follow ``ENDOKERNEL_AUTOTUNE``)."""
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool or None, got {enabled!r}")
    global _enabled
    _enabled = enabled


def autotune_enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get("ENDOKERNEL_AUTOTUNE", "0") not in ("", "0")


def cache_file() -> Path:
    root = os.environ.get("ENDOKERNEL_CACHE_DIR") or Path.home() / ".cache" / "endokernel"
    return Path(root) / "triton-autotune.json"


def cache_key(kind: str, device: torch.device, dtype: torch.dtype, dim: int, vocab: int) -> str:
    """``kind|GPU name|dtype|D=..|V<=..``, V bucketed to the next power of two."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "interpreter"
    return f"{kind}|{name}|{DTYPE_NAMES[dtype]}|D={dim}|V<={1 << max(0, vocab - 1).bit_length()}"


def _read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, config: KernelConfig) -> None:
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = _read_cache()
    entries[key] = config.as_dict()
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(entries, f, indent=1, sort_keys=True)
    os.replace(f.name, path)  # readers never see a half-written file


def _seconds(launches: list[Launch], device: torch.device) -> float:
    """Median time of the launches (on the interpreter: one wall-clock run)."""
    def run() -> None:
        for launch in launches:
            launch.run(device)

    if device.type != "cuda":
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    import triton.testing

    with on_device(device):  # do_bench synchronizes and records its events on the current device
        return triton.testing.do_bench(run, warmup=5, rep=25, return_mode="median") / 1e3


def compile_failures() -> tuple[type[BaseException], ...]:
    """The errors that rule a candidate out on this GPU: those Triton's autotuner skips a config for
    (``OutOfResources``, ``CompileTimeAssertionFailure``, ``PTXASError``: ptxas rejected the kernel, e.g. out of
    registers; in ``triton.runtime.errors`` / ``triton.compiler.errors`` in Triton 3.6 and 3.9), and any other
    ``CompilationError``. Looked up by name: older Triton lacks some."""
    import triton.compiler.errors
    import triton.runtime.errors

    names = (("runtime", "OutOfResources"), ("runtime", "PTXASError"), ("compiler", "CompilationError"),
             ("compiler", "CompileTimeAssertionFailure"))
    modules = {"runtime": triton.runtime.errors, "compiler": triton.compiler.errors}
    found = (getattr(modules[module], name, None) for module, name in names)
    return tuple(error for error in found if error is not None)


def pick(kind: str, hidden: torch.Tensor, weight: torch.Tensor, default: KernelConfig,
         candidates: Callable[[], list[KernelConfig]],
         launches: Callable[[KernelConfig], list[Launch]]) -> KernelConfig:
    """The configuration of a ``kind`` kernel ('forward', 'forward-light', 'backward') for these inputs: the
    default, or with autotuning the cached or newly measured fastest of ``candidates()``, each timed through
    ``launches(config)``."""
    if not autotune_enabled():
        return default
    vocab, dim = weight.shape
    key = cache_key(kind, hidden.device, hidden.dtype, dim, vocab)
    cached = _read_cache().get(key)
    if cached is not None:
        return KernelConfig(**cached)
    failures = compile_failures()
    timings = []
    for candidate in candidates():
        try:
            timings.append((_seconds(launches(candidate), hidden.device), candidate))
        except failures:
            continue  # does not compile for this GPU (too large for it): not a candidate here
    if not timings:
        return default
    best = min(timings, key=lambda timing: timing[0])[1]
    _write_cache(key, best)
    return best
