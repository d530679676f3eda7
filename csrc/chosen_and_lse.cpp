// The forward statistics as one C++ tile loop (see endokernel/backends/cpp/backend.py for the contract).
//
// Loop order: token super-blocks (gathered and converted to the matmul dtype once), then vocabulary tiles
// (converted once per super-block), then small token tiles spread over threads. Each (token tile x vocab
// tile) logits tile is small enough to stay in L2 and is folded by the fused epilogue right after its matmul.
// A position belongs to exactly one token tile, whose size does not depend on the thread count, and meets
// the vocabulary tiles in order: results are bitwise identical for any number of threads.
#include "chosen_and_lse.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "checks.h"
#include "epilogue.h"
#include "tile.h"

namespace endokernel {
namespace {

template <typename acc_t>
void run(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows, const at::Tensor& targets,
         const Scales<acc_t>& scales, double temperature, const at::Tensor& chosen_out, const at::Tensor& lse_out,
         const std::optional<at::Tensor>& entropy_out, at::ScalarType mm_dtype, const Blocks& blocks) {
  const int64_t num_positions = rows.numel(), vocab = weight.size(0);
  const bool with_entropy = entropy_out.has_value();
  const int64_t tile_tokens = blocks.tile_tokens, tile_vocab = std::min(blocks.tile_vocab, vocab);
  const at::ScalarType acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
  const auto acc_options = hidden.options().dtype(acc_dtype);
  const auto mm_options = hidden.options().dtype(mm_dtype);

  std::vector<TileBuffer> tiles;  // one per thread
  for (int64_t i = 0; i < at::get_num_threads(); ++i) {
    tiles.emplace_back(tile_tokens * tile_vocab, acc_options, mm_options);
  }
  at::Tensor weight_tile =
      weight.scalar_type() == mm_dtype ? at::Tensor() : at::empty({tile_vocab, weight.size(1)}, mm_options);
  std::vector<Running<acc_t>> states;
  const int64_t* target_ptr = targets.const_data_ptr<int64_t>();

  for (int64_t p0 = 0; p0 < num_positions; p0 += blocks.token_block) {
    const int64_t positions = std::min(blocks.token_block, num_positions - p0);
    const at::Tensor h = hidden.index_select(0, rows.narrow(0, p0, positions)).to(mm_dtype).contiguous();
    states.assign(positions, Running<acc_t>());
    const int64_t num_tiles = (positions + tile_tokens - 1) / tile_tokens;
    for (int64_t v0 = 0; v0 < vocab; v0 += tile_vocab) {
      const int64_t width = std::min(tile_vocab, vocab - v0);
      at::Tensor w = weight.narrow(0, v0, width);
      if (weight_tile.defined()) w = weight_tile.narrow(0, 0, width).copy_(w);
      const at::Tensor w_t = w.t();
      at::parallel_for(0, num_tiles, 1, [&](int64_t begin, int64_t end) {
        const int64_t tid = at::get_thread_num();
        for (int64_t t = begin; t < end; ++t) {
          const int64_t t0 = t * tile_tokens, height = std::min(tile_tokens, positions - t0);
          acc_t* data = tiles[tid].matmul(h.narrow(0, t0, height), w_t).data_ptr<acc_t>();
          for (int64_t r = 0; r < height; ++r) {
            fold_row<acc_t>(data + r * width, width, v0, target_ptr[p0 + t0 + r], scales, with_entropy,
                            states[t0 + r]);
          }
        }
      });
    }
    acc_t* chosen = chosen_out.data_ptr<acc_t>() + p0;
    acc_t* lse = lse_out.data_ptr<acc_t>() + p0;
    acc_t* entropy = with_entropy ? entropy_out->data_ptr<acc_t>() + p0 : nullptr;
    const acc_t t = static_cast<acc_t>(temperature);
    for (int64_t i = 0; i < positions; ++i) {
      const Running<acc_t>& s = states[i];
      const acc_t log_sum = std::log(s.sum);
      chosen[i] = target_ptr[p0 + i] >= 0 ? s.chosen * t : acc_t(0);
      lse[i] = (s.max + log_sum) * t;
      if (entropy != nullptr) entropy[i] = log_sum - s.dev / s.sum;
    }
  }
}

}  // namespace

void chosen_and_lse(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows,
                    const at::Tensor& targets, const std::optional<at::Tensor>& bias, double pre,
                    std::optional<double> post, double temperature, const at::Tensor& chosen_out,
                    const at::Tensor& lse_out, const std::optional<at::Tensor>& entropy_out, at::ScalarType mm_dtype,
                    const Blocks& blocks) {
  check_matrices(hidden, weight);
  TORCH_CHECK(blocks.token_block > 0 && blocks.tile_tokens > 0 && blocks.tile_vocab > 0, "block sizes must be > 0");
  const int64_t n = rows.numel();
  const at::ScalarType acc = chosen_out.scalar_type();
  check_vector(rows, "rows", at::kLong, n);
  check_vector(targets, "targets", at::kLong, n);
  check_vector(chosen_out, "chosen_out", acc, n);
  check_vector(lse_out, "lse_out", acc, n);
  if (entropy_out.has_value()) check_vector(*entropy_out, "entropy_out", acc, n);
  if (bias.has_value()) check_vector(*bias, "bias", acc, weight.size(0));
  if (n == 0) return;

  AT_DISPATCH_FLOATING_TYPES(acc, "endokernel::chosen_and_lse", [&] {
    const Scales<scalar_t> scales{static_cast<scalar_t>(pre), static_cast<scalar_t>(post.value_or(1.0)),
                                  post.has_value(), bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr};
    run<scalar_t>(hidden.contiguous(), weight.contiguous(), rows, targets, scales, temperature, chosen_out, lse_out,
                  entropy_out, mm_dtype, blocks);
  });
}

}  // namespace endokernel
