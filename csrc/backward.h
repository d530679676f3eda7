// Gradients of the per-position statistics on CPU, logits-free: dL/dhidden rows, dL/dweight, dL/dbias.
#pragma once

#include <ATen/core/Tensor.h>
#include <optional>

#include <cstdint>

#include "logits_product.h"

namespace endokernel {

// Loop sizes: the vocabulary chunk and token block whose dL/dlogits are held at once (vocab_block x
// token_block in the matmul dtype), the rows of one dL/dweight work item (tile_rows vocabulary rows; the
// dL/dhidden items take as many positions as cost the same), and one recomputed logits tile (tile_vocab x
// tile_tokens).
struct BackwardBlocks {
  int64_t token_block;
  int64_t vocab_block;
  int64_t tile_rows;
  int64_t tile_tokens;
  int64_t tile_vocab;
  Engine engine;  // of the recomputed logits tiles (logits_product.h)
};

// hidden (M, D), weight (V, D) of one float dtype; rows, targets (N,) int64; bias (V,), lse, entropy and the
// upstream gradients (N,) in the accumulation dtype (float32, float64 for float64 inputs). Writes every element
// of each given output: grad_hidden (N, D) in the accumulation dtype (row n belongs to hidden[rows[n]]),
// grad_weight (V, D) and grad_bias (V,) in any float dtype (accumulated in the accumulation dtype, rounded once).
void backward(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows, const at::Tensor& targets,
              const std::optional<at::Tensor>& bias, double pre, std::optional<double> post, double temperature,
              const at::Tensor& lse, const std::optional<at::Tensor>& entropy, const at::Tensor& grad_chosen,
              const at::Tensor& grad_lse, const std::optional<at::Tensor>& grad_entropy,
              const std::optional<at::Tensor>& grad_hidden, const std::optional<at::Tensor>& grad_weight,
              const std::optional<at::Tensor>& grad_bias, at::ScalarType mm_dtype, const BackwardBlocks& blocks);

}  // namespace endokernel
