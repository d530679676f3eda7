"""Whether the compiled C++ CPU kernels (``endokernel.backends.cpp._C``, built from csrc/ at install time) are here.

They are optional: an install without a compiler or without torch at build time has none, and
ENDOKERNEL_DISABLE_CPP=1 hides a built one (CI runs the suite both ways). Importing endokernel never warns;
``cpp_available()`` answers, and ``backend='cpp'`` raises with the reason when they are missing.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch  # noqa: F401  (loads libtorch, which the extension links against, before the extension)

DISABLE_VARIABLE = "ENDOKERNEL_DISABLE_CPP"


def _load() -> tuple[ModuleType | None, str]:
    """(the extension module or None, why it is missing)."""
    if os.environ.get(DISABLE_VARIABLE) == "1":
        return None, f"disabled by {DISABLE_VARIABLE}=1"
    try:
        return importlib.import_module("endokernel.backends.cpp._C"), ""
    except ImportError as error:
        return None, (f"not built ({error}); reinstall with a C++ compiler and "
                      "'pip install --no-build-isolation' so the build sees torch")


# loaded once at import, so that backend dispatch under torch.compile reads a constant (dynamo does not trace
# importlib); a missing extension is silent until asked about
_MODULE, _WHY = _load()


def cpp_available() -> bool:
    """True when the C++ CPU kernels are built and not disabled (then backend='cpp' works)."""
    return _MODULE is not None


def extension() -> ModuleType:
    """The extension module; RuntimeError saying why where it is missing."""
    module, why = _MODULE, _WHY
    if module is None:
        raise RuntimeError(f"backend='cpp' needs endokernel's C++ CPU kernels, which are {why}; "
                           "use backend='torch' instead")
    return module
