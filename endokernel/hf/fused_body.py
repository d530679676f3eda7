"""The decoder body's elementwise passes on a CPU, fused: RMSNorms and the gated MLP's ``act(gate) * up`` run as
C++ kernels (csrc/decoder_ops.cpp) while ``score`` runs the body, one read and one write per tensor where the
modules' own forward makes five to eight passes and allocates float copies.

A module is swapped only where its class computes what a kernel does: checked once per class and dtype on a
probe, against the module's own forward (a norm of another formula, an MLP with another activation or layout
keeps its forward). Outside ``fused_decoder_ops`` every module is untouched; inside, a call with autograd on,
a non-contiguous input or a dtype the kernels do not take goes to the module's own forward."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch

from ..backends.cpp.loader import cpp_available, extension

FUSED_DTYPES = (torch.float32, torch.bfloat16)  # what csrc/decoder_ops.cpp takes
# activation class names -> the kernel's activation code (0 silu, 1 gelu with the tanh approximation)
ACTIVATIONS = {"SiLUActivation": 0, "SiLU": 0, "GELUTanh": 1, "PytorchGELUTanh": 1}
# how close a probe's fused output must come to the module's own: a few units in the last place of the dtype
PROBE_RTOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
# (module class, activation class, dtype) -> what its probe found: the formula is the class's, not the weights'
_VERIFIED: dict[tuple[type, type, torch.dtype], object] = {}


@contextlib.contextmanager
def fused_decoder_ops(decoder: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, the decoder's RMSNorm and gated-MLP modules that the kernels reproduce run fused (on
    CPU parameters, where the C++ kernels are built); yields how many modules were swapped."""
    swapped = []
    if enabled and cpp_available():
        for module in decoder.modules():
            if "forward" in module.__dict__:
                continue  # a hook (accelerate's, say) already wraps this instance's forward: leave it be
            fused = _fused_forward(module)
            if fused is not None:
                module.forward = fused
                swapped.append(module)
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            module.__dict__.pop("forward", None)


def _fused_forward(module: torch.nn.Module) -> Callable | None:
    """The fused forward for ``module`` if it is a norm or an MLP a kernel reproduces, else None."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and "RMSNorm" in type(module).__name__:
        if weight.dim() != 1 or weight.device.type != "cpu" or weight.dtype not in FUSED_DTYPES:
            return None
        unit_offset = _verified(module, weight.dtype, _norm_flavor)
        return None if unit_offset is None else functools.partial(_norm_forward, module, unit_offset)
    activation = ACTIVATIONS.get(type(getattr(module, "act_fn", None)).__name__)
    if activation is None or not all(isinstance(getattr(module, name, None), torch.nn.Module)
                                     for name in ("gate_proj", "up_proj", "down_proj")):
        return None
    gate_weight = getattr(module.gate_proj, "weight", None)
    if not isinstance(gate_weight, torch.Tensor) or gate_weight.device.type != "cpu" or (
            gate_weight.dtype not in FUSED_DTYPES):
        return None
    if not _verified(module, gate_weight.dtype, _mlp_matches):
        return None
    return functools.partial(_mlp_forward, module, activation)


def _epsilon(module: torch.nn.Module) -> float | None:
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None


def _fusable(x: torch.Tensor) -> bool:
    return not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype in FUSED_DTYPES and x.is_contiguous()


def _norm_forward(module: torch.nn.Module, unit_offset: bool, x: torch.Tensor) -> torch.Tensor:
    weight = module.weight
    if not _fusable(x) or weight.dtype not in (x.dtype, torch.float32) or x.shape[-1:] != weight.shape:
        return type(module).forward(module, x)
    # Llama-style norms return weight * x_normed in the promoted dtype; Gemma's round once to x's dtype
    out = torch.empty(x.shape, dtype=x.dtype if unit_offset else torch.promote_types(x.dtype, weight.dtype))
    extension().rms_norm(x, weight.detach(), _epsilon(module), unit_offset, out)
    return out


def _mlp_forward(module: torch.nn.Module, activation: int, x: torch.Tensor) -> torch.Tensor:
    gate, up = module.gate_proj(x), module.up_proj(x)
    if not (_fusable(gate) and up.is_contiguous() and up.dtype == gate.dtype and up.shape == gate.shape):
        return module.down_proj(module.act_fn(gate) * up)
    extension().act_mul_(gate, up, activation)
    return module.down_proj(gate)


def _probe(width: int, dtype: torch.dtype) -> torch.Tensor:
    """A fixed input spanning magnitudes from 1e-3 to 1e2: (8, width) of ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.logspace(-3, 2, 8, dtype=torch.float64)[:, None]
    return (torch.randn(8, width, generator=generator, dtype=torch.float64) * scales).to(dtype)


def _agrees(fused: torch.Tensor, own: torch.Tensor) -> bool:
    if fused.dtype != own.dtype or fused.shape != own.shape:
        return False
    difference = (fused.double() - own.double()).abs()
    scale = own.double().abs()
    return bool((difference <= PROBE_RTOL[own.dtype] * scale + 1e-6 * scale.amax(-1, keepdim=True)).all())


def _verified(module: torch.nn.Module, dtype: torch.dtype, check: Callable) -> object:
    """``check(module, dtype)``, run once per module class, activation class and dtype."""
    key = (type(module), type(getattr(module, "act_fn", None)), dtype)
    if key not in _VERIFIED:
        _VERIFIED[key] = check(module, dtype)
    return _VERIFIED[key]


def _norm_flavor(module: torch.nn.Module, dtype: torch.dtype) -> bool | None:
    """Which kernel flavor a norm computes (False: weight * x_normed, True: x_normed * (1 + weight)), or None
    where neither reproduces its own forward on the probe."""
    if _epsilon(module) is None:
        return None
    cls = type(module)
    x = _probe(module.weight.shape[0], dtype)
    with torch.no_grad():
        try:
            own = cls.forward(module, x)
        except Exception:  # a norm that needs more than a tensor: not one of these
            return None
        for unit_offset in (False, True):
            if isinstance(own, torch.Tensor) and _agrees(_norm_forward(module, unit_offset, x), own):
                return unit_offset
    return None


def _mlp_matches(module: torch.nn.Module, dtype: torch.dtype) -> bool:
    """Whether an MLP computes down(act(gate(x)) * up(x)) with its activation, on the probe."""
    activation = ACTIVATIONS[type(module.act_fn).__name__]
    x = _probe(module.gate_proj.weight.shape[1], dtype)
    with torch.no_grad():
        try:
            own = type(module).forward(module, x)
        except Exception:
            return False
        return isinstance(own, torch.Tensor) and _agrees(_mlp_forward(module, activation, x), own)
