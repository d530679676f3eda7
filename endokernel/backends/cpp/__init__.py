"""The C++ CPU backend (``StatisticsBackend``, see ``endokernel.backends``): ``loader.py`` imports the compiled
extension variant the running CPU can execute (``_C_avx512``, ``_C_avx2``, ``_C_default``, built from csrc/ at
install time), ``backend.py`` calls its forward and backward."""

from .backend import backward, chosen_and_lse
from .loader import cpp_available

__all__ = ["backward", "chosen_and_lse", "cpp_available"]
