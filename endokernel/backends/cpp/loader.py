"""Which compiled C++ CPU kernels this process runs: one variant per instruction set (``_C_avx512``, ``_C_avx2``,
``_C_default``, built from csrc/ at install time, see setup.py), chosen from the *running* CPU.

The choice follows torch's own: ``torch.backends.cpu.get_cpu_capability()`` (what ATen dispatches its CPU kernels
with, from the CPU's feature flags; ``ATEN_CPU_CAPABILITY`` lowers it) says which variants this CPU can execute,
and the fastest of those that were built is imported. ``ENDOKERNEL_CPU_ISA=avx512|avx2|default`` forces one (it
must be built and runnable here), ``cpu_paths(isa=...)`` one for a block of calls. A variant is never imported on a
CPU that cannot run it: its code, even its module initialisation, may use instructions that CPU lacks.

The kernels are optional: an install without a compiler or without torch at build time has none, and
ENDOKERNEL_DISABLE_CPP=1 hides built ones (CI runs the suite both ways). Importing endokernel never warns;
``cpp_available()`` answers, and ``backend='cpp'`` raises with the reason where they are missing.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from types import ModuleType

import torch  # loads libtorch, which the extension links against, before the extension

from ..cpu_choice import forced_isa

DISABLE_VARIABLE = "ENDOKERNEL_DISABLE_CPP"
ISA_VARIABLE = "ENDOKERNEL_CPU_ISA"
VARIANTS = ("avx512", "avx2", "default")  # fastest first
# torch's CPU capability -> the variants a CPU with it can execute
RUNNABLE = {"AVX512": ("avx512", "avx2", "default"), "AVX2": ("avx2", "default")}


def _module_name(isa: str) -> str:
    return f"endokernel.backends.cpp._C_{isa}"


def runnable_variants(capability: str | None = None) -> tuple[str, ...]:
    """The variants a CPU of torch's ``capability`` (default: this one's) can execute, fastest first."""
    return RUNNABLE.get(capability or torch.backends.cpu.get_cpu_capability(), ("default",))


def built_variants() -> tuple[str, ...]:
    """The variants compiled into this install, fastest first."""
    return tuple(isa for isa in VARIANTS if importlib.util.find_spec(_module_name(isa)) is not None)


def usable_variants() -> tuple[str, ...]:
    """Built and runnable here, fastest first: the variants tests check against the reference."""
    return tuple(isa for isa in built_variants() if isa in runnable_variants())


def why_not(isa: str, capability: str, built: tuple[str, ...]) -> str | None:
    """Why variant ``isa`` cannot be loaded on a CPU of torch's ``capability`` with ``built`` variants, or None."""
    if isa not in VARIANTS:
        return f"there is no variant {isa!r} (variants: {', '.join(VARIANTS)})"
    if isa not in runnable_variants(capability):
        return f"this CPU cannot run the {isa} variant (torch reports its capability as {capability})"
    if isa not in built:
        return (f"the {isa} variant is not built (built: {', '.join(built) or 'none'}); reinstall with a C++ "
                "compiler and 'pip install --no-build-isolation' so the build sees torch")
    return None


def choose(forced: str | None, capability: str, built: tuple[str, ...]) -> tuple[str | None, str]:
    """(the variant to load or None, why there is none) for ENDOKERNEL_CPU_ISA's value ``forced``."""
    if forced:
        why = why_not(forced.lower(), capability, built)
        return (None, f"{ISA_VARIABLE}={forced}: {why}") if why else (forced.lower(), "")
    usable = [isa for isa in VARIANTS if isa in built and isa in runnable_variants(capability)]
    if not usable:
        return None, why_not(runnable_variants(capability)[0], capability, built) or "not built"
    return usable[0], ""


@functools.cache
def _import(isa: str) -> ModuleType:
    return importlib.import_module(_module_name(isa))


def _load() -> tuple[ModuleType | None, str | None, str]:
    if os.environ.get(DISABLE_VARIABLE) == "1":
        return None, None, f"disabled by {DISABLE_VARIABLE}=1"
    isa, why = choose(os.environ.get(ISA_VARIABLE), torch.backends.cpu.get_cpu_capability(), built_variants())
    if isa is None:
        return None, None, why
    try:
        return _import(isa), isa, ""
    except ImportError as error:
        return None, None, f"not loadable ({error})"


# loaded once at import, so that backend dispatch under torch.compile reads a constant (dynamo does not trace
# importlib); a missing extension is silent until asked about
_MODULE, _ISA, _WHY = _load()


def cpp_available() -> bool:
    """True when the C++ CPU kernels are built and not disabled (then backend='cpp' works)."""
    return _MODULE is not None


def cpp_variant() -> str | None:
    """The instruction-set variant of the C++ kernels this process runs ('avx512', 'avx2', 'default'), or None."""
    return _ISA


def require_cpp() -> None:
    """RuntimeError saying why where the C++ kernels are not available (reads only what import decided, so
    backend dispatch stays traceable by torch.compile)."""
    if _MODULE is None:
        raise RuntimeError(f"backend='cpp' needs endokernel's C++ CPU kernels, not available here: {_WHY}; "
                           "use backend='torch' instead")


def extension(isa: str | None = None) -> ModuleType:
    """The extension module: variant ``isa`` (it must be built and runnable on this CPU), else the one
    ``cpu_paths`` forces, else the one chosen at import; RuntimeError saying why where it is missing."""
    isa = isa or forced_isa()
    if isa is None:
        require_cpp()
        return _MODULE
    why = why_not(isa, torch.backends.cpu.get_cpu_capability(), built_variants())
    if why is not None:
        raise RuntimeError(f"C++ CPU kernels {isa!r}: {why}")
    return _import(isa)
