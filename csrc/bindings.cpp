// The Python module endokernel.backends.cpp._C: the CPU kernels, called by endokernel/backends/cpp/backend.py.
#include <torch/extension.h>

#include "backward.h"
#include "chosen_and_lse.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def(
      "chosen_and_lse",
      [](const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows, const at::Tensor& targets,
         const std::optional<at::Tensor>& bias, double pre, std::optional<double> post, double temperature,
         const at::Tensor& chosen_out, const at::Tensor& lse_out, const std::optional<at::Tensor>& entropy_out,
         at::ScalarType mm_dtype, int64_t token_block, int64_t tile_tokens, int64_t tile_vocab) {
        endokernel::chosen_and_lse(hidden, weight, rows, targets, bias, pre, post, temperature, chosen_out, lse_out,
                                   entropy_out, mm_dtype, {token_block, tile_tokens, tile_vocab});
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
         int64_t vocab_block, int64_t tile_rows, int64_t tile_vocab) {
        endokernel::backward(hidden, weight, rows, targets, bias, pre, post, temperature, lse, entropy, grad_chosen,
                             grad_lse, grad_entropy, grad_hidden, grad_weight, grad_bias, mm_dtype,
                             {token_block, vocab_block, tile_rows, tile_vocab});
      },
      "Gradients into grad_hidden, grad_weight, grad_bias (each optional), see backward.h",
      py::call_guard<py::gil_scoped_release>());
}
