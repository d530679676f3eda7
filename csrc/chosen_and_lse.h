// Forward per-position statistics on CPU: chosen logit, T * logsumexp(z / T) and entropy, logits-free.
#pragma once

#include <ATen/core/Tensor.h>
#include <optional>

#include <cstdint>

#include "logits_product.h"

namespace endokernel {

// Tile sizes: token super-block (packed once), and one logits tile (tile_vocab x tile_tokens); the engine
// that multiplies the tiles (see logits_product.h).
struct Blocks {
  int64_t token_block;
  int64_t tile_tokens;
  int64_t tile_vocab;
  Engine engine;
};

// hidden (M, D), weight (V, D) of one float dtype; rows, targets (N,) int64; bias (V,) and the outputs (N,)
// in the accumulation dtype (float32, float64 for float64 inputs). Writes every output element.
void chosen_and_lse(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows,
                    const at::Tensor& targets, const std::optional<at::Tensor>& bias, double pre,
                    std::optional<double> post, double temperature, const at::Tensor& chosen_out,
                    const at::Tensor& lse_out, const std::optional<at::Tensor>& entropy_out, at::ScalarType mm_dtype,
                    const Blocks& blocks);

}  // namespace endokernel
