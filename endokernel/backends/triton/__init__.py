"""The Triton backend (``StatisticsBackend``, see ``endokernel.backends``): compiled on CUDA (and ROCm) tensors,
run under Triton's interpreter on CPU tensors.

``forward.py`` holds the fused statistics kernel and its launcher, ``combine.py`` the deterministic merge of
its vocabulary splits, ``backward.py`` the gradient kernels, ``tile.py`` the logits tile and its gradient that
forward and backward share, ``finalize.py`` the reward finalizer kernel, ``runtime.py`` the launch."""

from .backward import backward
from .forward import chosen_and_lse

__all__ = ["backward", "chosen_and_lse"]
