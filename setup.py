"""Builds the optional C++ CPU kernels (``endokernel.backends.cpp._C``, sources in csrc/) against the installed torch.

The extension builds only where torch is importable at build time (``pip install --no-build-isolation``) and a
C++ compiler works; anywhere else the build warns once and the package installs without it, running on the
pure-torch path (``endokernel.cpp_available()`` says which). ENDOKERNEL_DISABLE_CPP=1 skips the build.
"""

import os
import warnings

from setuptools import setup

SOURCES = ["csrc/bindings.cpp", "csrc/chosen_and_lse.cpp", "csrc/backward.cpp"]
FALLBACK = "endokernel: building without the C++ CPU kernels ({}); the pure-torch path is used instead"


def _has_avx2() -> bool:
    """at::vec picks its vector width from CPU_CAPABILITY macros: AVX2 where the building CPU has it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


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
        """A failed compile leaves the package pure-Python instead of failing the install."""

        def run(self) -> None:
            try:
                super().run()
            except Exception as error:  # compiler missing or compile error: degrade, do not fail
                warnings.warn(FALLBACK.format(f"{type(error).__name__}: {error}"), stacklevel=2)

    vector = ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"] if _has_avx2() else []
    extension = CppExtension("endokernel.backends.cpp._C", SOURCES, extra_compile_args=["-O3", "-fopenmp", *vector],
                             extra_link_args=["-fopenmp"])
    return {"ext_modules": [extension], "cmdclass": {"build_ext": OptionalBuildExt}}


setup(**_extension_kwargs())
