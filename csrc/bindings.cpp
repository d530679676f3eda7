// The Python module endokernel.backends.cpp._C_<isa>: the CPU kernels, called by endokernel/backends/cpp/backend.py.
#include <torch/csrc/utils/pybind.h>

#include <ATen/cpu/vec/vec.h>

#include "backward.h"
#include "chosen_and_lse.h"
#include "decoder_ops.h"
#include "logits_product.h"

#define ENDOKERNEL_STRINGIFY_(x) #x
#define ENDOKERNEL_STRINGIFY(x) ENDOKERNEL_STRINGIFY_(x)

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // the at::vec code this variant was compiled with (CPU_CAPABILITY), and the tile engines it can use here
#ifdef CPU_CAPABILITY
  m.attr("CPU_CAPABILITY") = ENDOKERNEL_STRINGIFY(CPU_CAPABILITY);
#else
  m.attr("CPU_CAPABILITY") = "DEFAULT";
#endif
  m.attr("VECTOR_FLOATS") = at::vec::Vectorized<float>::size();
  m.def("brgemm_bf16", &endokernel::brgemm_bf16_works, "Whether bf16 tiles multiply by brgemm into fp32 here");
  m.def(
      "engine",
      [](int64_t requested, at::ScalarType mm_dtype, at::ScalarType acc_dtype) {
        return static_cast<int64_t>(endokernel::resolve_engine(static_cast<endokernel::Engine>(requested), mm_dtype,
                                                               acc_dtype));
      },
      "The tile engine a request resolves to (0 auto, 1 brgemm, 2 aten)");
  m.def(
      "chosen_and_lse",
      [](const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows, const at::Tensor& targets,
         const std::optional<at::Tensor>& bias, double pre, std::optional<double> post, double temperature,
         const at::Tensor& chosen_out, const at::Tensor& lse_out, const std::optional<at::Tensor>& entropy_out,
         at::ScalarType mm_dtype, int64_t token_block, int64_t tile_tokens, int64_t tile_vocab, int64_t engine) {
        endokernel::chosen_and_lse(hidden, weight, rows, targets, bias, pre, post, temperature, chosen_out, lse_out,
                                   entropy_out, mm_dtype,
                                   {token_block, tile_tokens, tile_vocab, static_cast<endokernel::Engine>(engine)});
      },
      "Forward statistics into chosen_out, lse_out (and entropy_out), see chosen_and_lse.h",
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "backward",
      [](const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows, const at::Tensor& targets,
         const std::optional<at::Tensor>& bias, double pre, std::optional<double> post, double temperature,
         const at::Tensor& lse, const std::optional<at::Tensor>& entropy, const at::Tensor& grad_chosen,
         const at::Tensor& grad_lse, const std::optional<at::Tensor>& grad_entropy,
         const std::optional<at::Tensor>& grad_hidden, const std::optional<at::Tensor>& grad_weight,
         const std::optional<at::Tensor>& grad_bias, at::ScalarType mm_dtype, int64_t token_block,
         int64_t vocab_block, int64_t tile_rows, int64_t tile_tokens, int64_t tile_vocab, int64_t engine) {
        endokernel::backward(hidden, weight, rows, targets, bias, pre, post, temperature, lse, entropy, grad_chosen,
                             grad_lse, grad_entropy, grad_hidden, grad_weight, grad_bias, mm_dtype,
                             {token_block, vocab_block, tile_rows, tile_tokens, tile_vocab,
                              static_cast<endokernel::Engine>(engine)});
      },
      "Gradients into grad_hidden, grad_weight, grad_bias (each optional), see backward.h",
      py::call_guard<py::gil_scoped_release>());
  m.def("rms_norm", &endokernel::rms_norm, "RMSNorm of x's rows into out, see decoder_ops.h",
        py::call_guard<py::gil_scoped_release>());
  m.def(
      "act_mul_",
      [](const at::Tensor& gate, const at::Tensor& up, int64_t activation) {
        endokernel::act_mul_(gate, up, static_cast<endokernel::Activation>(activation));
      },
      "gate <- act(gate) * up (0 silu, 1 gelu tanh), see decoder_ops.h", py::call_guard<py::gil_scoped_release>());
  m.def("merge_attention", &endokernel::merge_attention,
        "Attention over two key sets merged from their outputs and log-sum-exps, see decoder_ops.h",
        py::call_guard<py::gil_scoped_release>());
}
