"""The fused decoder ops of ``score`` on a CPU (endokernel/hf/fused_body.py, csrc/decoder_ops.cpp): RMSNorm (Llama
and Gemma formulas) and act(gate) * up (SiLU, GELU-tanh) equal the modules' own forward on fresh random inputs of
odd widths, in float32 and bfloat16; modules of another formula, with hooks, or run with autograd keep their own
forward; the swap is undone after the block; rewards with and without agree."""

import pytest
import torch
from transformers.activations import GELUTanh, SiLUActivation
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

from endokernel import EndogenousRewardModel
from endokernel.hf.fused_body import fused_decoder_ops

import cases as fx

pytestmark = fx.NEEDS_CPP

# fused vs the module's own forward: float32 up to summation order; bfloat16 up to one rounding of x * r
RTOL = {torch.float32: 1e-5, torch.bfloat16: 1.6e-2}


def container(*modules: torch.nn.Module) -> torch.nn.Module:
    return torch.nn.ModuleList(modules)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    difference = (actual.double() - expected.double()).abs()
    assert bool((difference <= RTOL[expected.dtype] * expected.double().abs() + 1e-6).all()), difference.max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm_class", [LlamaRMSNorm, Qwen3RMSNorm, Gemma3RMSNorm])
@pytest.mark.parametrize("shape", [(1, 37), (3, 5, 130), (2, 7, 3, 64)])
def test_norm_equals_the_module(norm_class, dtype, shape):
    norm = norm_class(shape[-1]).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(-1.0, 2.0)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(fx.fresh_seed())).mul(4).to(dtype)
    with torch.no_grad():
        own = norm(x)
        with fused_decoder_ops(container(norm)) as swapped:
            assert swapped == 1 and "forward" in norm.__dict__
            fused = norm(x)
    assert "forward" not in norm.__dict__  # undone after the block
    close(fused, own)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation", [SiLUActivation, GELUTanh])
def test_gated_mlp_equals_the_module(activation, dtype):
    config = fx.make_model("llama", 64).config
    config.hidden_size, config.intermediate_size = 33, 91
    mlp = LlamaMLP(config).to(dtype)
    mlp.act_fn = activation()
    x = torch.randn(2, 9, 33, generator=torch.Generator().manual_seed(fx.fresh_seed())).to(dtype)
    with torch.no_grad():
        own = mlp(x)
        with fused_decoder_ops(container(mlp)) as swapped:
            assert swapped == 1
            fused = mlp(x)
    close(fused, own)


class ShiftedRMSNorm(torch.nn.Module):
    """An RMSNorm of another formula (an added shift): no kernel computes it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon) + 0.5


def test_other_formulas_hooks_and_autograd_keep_their_forward():
    relu_mlp = LlamaMLP(fx.make_model("llama", 64).config)
    relu_mlp.act_fn = torch.nn.ReLU()
    hooked = LlamaRMSNorm(16)
    hooked.forward = lambda x: x  # an instance-level wrapper, as accelerate's hooks install
    with fused_decoder_ops(container(ShiftedRMSNorm(16), relu_mlp, hooked)) as swapped:
        assert swapped == 0
    norm = LlamaRMSNorm(16)
    x = torch.randn(3, 16, requires_grad=True)
    with fused_decoder_ops(container(norm)) as swapped:
        assert swapped == 1
        y = norm(x)  # autograd on: the module's own forward, differentiable
    assert y.grad_fn is not None
    torch.testing.assert_close(y, LlamaRMSNorm(16)(x))


@pytest.mark.parametrize("arch", ["qwen3", "gemma3", "gemma2"])
def test_rewards_with_and_without_fused_body(arch):
    tokenizer = fx.make_tokenizer()
    model = fx.make_gemma3_model(len(tokenizer)) if arch == "gemma3" else fx.make_model(arch, len(tokenizer))
    prompts, responses = zip(*fx.sample_pairs(5))
    fused = EndogenousRewardModel(model, tokenizer).score(prompts, responses)
    plain = EndogenousRewardModel(model, tokenizer, fused_body=False).score(prompts, responses)
    assert fx.relative_error(fused, plain) < 1e-5
    with fused_decoder_ops(model.get_decoder()) as swapped:
        assert swapped >= 2 * model.config.num_hidden_layers  # every layer's norms at least
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_fused_body_must_be_a_bool():
    with pytest.raises(TypeError, match="fused_body"):
        EndogenousRewardModel(fx.make_model("llama", 64), fx.make_tokenizer(), fused_body=1)
