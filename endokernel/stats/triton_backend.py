"""The Triton backend: forward kernels in ``triton_fwd``, backward kernels in ``triton_bwd``."""

from .triton_bwd import backward
from .triton_fwd import chosen_and_lse

__all__ = ["backward", "chosen_and_lse"]
