"""Builds the optional C++ CPU kernels (sources in csrc/) against the installed torch, once per instruction set.

Each variant is its own extension module, ``endokernel.backends.cpp._C_<isa>``, compiled from the same sources
with that ISA's flags: ``default`` (no vector flags: any CPU), and on x86-64 also ``avx2`` and ``avx512``.
Every variant is built whatever the building CPU is; ``endokernel/backends/cpp/loader.py`` imports the fastest
one the *running* CPU can execute (``ENDOKERNEL_CPU_ISA`` forces one), so a wheel built on an AVX-512 machine
still runs on an AVX2-only one.

The extensions build only where torch is importable at build time (``pip install --no-build-isolation``) and a
C++ compiler works; a variant that fails to compile is left out with a warning, and where none builds the
package installs without them, running on the pure-torch path (``endokernel.cpp_available()`` says which).
ENDOKERNEL_DISABLE_CPP=1 skips the build; ENDOKERNEL_BUILD_ISAS (a comma-separated subset) builds only some.
ENDOKERNEL_SANITIZE=1 builds them with AddressSanitizer and UndefinedBehaviorSanitizer, for .ci/sanitize only: such
a module loads only where the ASan runtime is preloaded.
"""

import os
import platform
import warnings

from setuptools import setup

SOURCES = ["csrc/bindings.cpp", "csrc/chosen_and_lse.cpp", "csrc/backward.cpp", "csrc/logits_product.cpp",
           "csrc/decoder_ops.cpp"]
FALLBACK = "endokernel: building without the C++ CPU kernels ({}); the pure-torch path is used instead"
# at::vec picks its vector code from the CPU_CAPABILITY macros, as ATen's own per-ISA kernels do; the flags are
# those ATen compiles its AVX2 and AVX512 kernels with (the CPUs torch reports as AVX2 / AVX512 have them all)
ISA_FLAGS = {
    "default": [],
    "avx2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mavx2",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
}
# hidden symbols: the inline functions each variant instantiates with its own ISA stay inside its module, so
# two variants loaded in one process never share (and never run) the other's code
# (and only the ATen headers each file uses: a variant compiles in well under a minute)
COMMON_FLAGS = ["-O3", "-fopenmp", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
                "-DTORCH_ASSERT_ONLY_METHOD_OPERATORS"]
# ENDOKERNEL_SANITIZE=1 (.ci/sanitize): an out-of-bounds access or undefined behaviour aborts the process with a
# report instead of passing unseen (UBSan would print and go on without -fno-sanitize-recover). -g1 (line tables
# only) puts file:line into the reports; -O1 (after -O3, so it wins) compiles a variant in about half -O3's time
# and keeps the checks (ASan asks for -O1 or more, for speed); -fno-wrapv undoes the -fwrapv of Python's flags,
# under which a signed overflow (an index product past 2**63) is defined and UBSan cannot report it.
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g1", "-O1",
            "-fno-wrapv"]


def _variants() -> list[str]:
    """Every variant this architecture has; ENDOKERNEL_BUILD_ISAS=avx512,avx2 (say) builds fewer, to save time."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "x64")
    variants = ["default", "avx2", "avx512"] if x86 else ["default"]
    wanted = os.environ.get("ENDOKERNEL_BUILD_ISAS")
    return [isa for isa in variants if isa in wanted.split(",")] if wanted else variants


def _extension_kwargs() -> dict:
    if os.environ.get("ENDOKERNEL_DISABLE_CPP") == "1":
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        warnings.warn(FALLBACK.format("torch is not importable at build time: install with --no-build-isolation"),
                      stacklevel=2)
        return {}

    class OptionalBuildExt(BuildExtension):
        """A variant that fails to compile is left out instead of failing the install."""

        def build_extensions(self) -> None:
            self.failed: dict[str, str] = {}
            try:
                super().build_extensions()
            except Exception as error:  # e.g. no compiler at all: degrade, do not fail
                self.failed["all"] = f"{type(error).__name__}: {error}"
            if len(self.failed) == len(self.extensions) or "all" in self.failed:
                warnings.warn(FALLBACK.format("; ".join(f"{k}: {v}" for k, v in self.failed.items())), stacklevel=2)
            elif self.failed:
                warnings.warn(f"endokernel: C++ variants not built: {self.failed}", stacklevel=2)

        def build_extension(self, ext) -> None:
            isa = ext.name.rsplit("_", 1)[-1]
            base = self.build_temp
            self.build_temp = os.path.join(base, isa)  # the variants compile the same sources: one object dir each
            try:
                super().build_extension(ext)
            except Exception as error:  # compiler without these ISA flags, or a compile error
                self.failed[isa] = f"{type(error).__name__}: {error}"
            finally:
                self.build_temp = base

    sanitize = SANITIZE if os.environ.get("ENDOKERNEL_SANITIZE") == "1" else []
    extensions = [
        CppExtension(f"endokernel.backends.cpp._C_{isa}", SOURCES,
                     extra_compile_args=[*COMMON_FLAGS, *ISA_FLAGS[isa], *sanitize],
                     extra_link_args=["-fopenmp", *sanitize[:1]])
        for isa in _variants()
    ]
    return {"ext_modules": extensions, "cmdclass": {"build_ext": OptionalBuildExt}}


setup(**_extension_kwargs())
