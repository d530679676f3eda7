"""The C++ CPU backend (``StatisticsBackend``, see ``endokernel.backends``): ``loader.py`` finds the compiled
extension (``_C``, built from csrc/ at install time), ``backend.py`` calls its forward and backward."""

from .backend import backward, chosen_and_lse
from .loader import cpp_available

__all__ = ["backward", "chosen_and_lse", "cpp_available"]
