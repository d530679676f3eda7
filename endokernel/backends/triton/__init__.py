"""The Triton backend (``StatisticsBackend``, see ``endokernel.backends``): compiled on CUDA (and ROCm) tensors,
run under Triton's interpreter on CPU tensors. Design, roofline and knobs: docs/backends/triton.md.

``forward.py`` holds the persistent statistics kernel and its launcher, ``combine.py`` the deterministic merge
of its vocabulary splits, ``backward.py`` the G kernel and the library GEMMs of the backward, ``tile.py`` the
logits tile, its epilogues and its gradient that forward and backward share, ``finalize.py`` the reward
finalizer kernel, ``configs.py`` the default configurations and autotuning candidates, ``tuning.py`` the
optional autotuning, ``runtime.py`` the launch, ``report.py`` the ahead-of-time compile report
(``endokernel kernels``, in ``backends/kernels_command.py``)."""

from .backward import backward
from .forward import chosen_and_lse
from .tuning import set_autotune

__all__ = ["backward", "chosen_and_lse", "set_autotune"]
