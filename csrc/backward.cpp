// The backward as one C++ loop (see endokernel/backends/cpp/backend.py for the contract).
//
// Loop order: vocabulary chunks, then token blocks; for each (chunk x block), dL/dlogits is recomputed into a
// buffer, transposed (vocabulary rows, position columns), by token tiles spread over threads (a transposed
// logits tile, then the fused epilogue on it while it is in L2); after a barrier, work items spread over threads
// multiply it out: blocks of positions add their dL/dhidden rows (one matmul against the chunk of the
// head), blocks of tile_rows vocabulary rows their dL/dweight rows (one matmul against the block of hidden rows)
// and bias sums. Every output row is owned by one work item whose sizes do not depend on the thread count, and
// meets the chunks (for dL/dhidden) or blocks (for dL/dweight) in order: no atomics, results bitwise identical
// for any number of threads. Four matmuls per logits element in all, as for any logits-free backward.
#include "backward.h"

#include <ATen/Dispatch.h>
#include "parallel.h"
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>

#include <algorithm>
#include <vector>

#include "checks.h"
#include "logits_grad.h"
#include "logits_product.h"
#include "tile.h"

namespace endokernel {
namespace {

// out += a @ b, in place where the matmul runs in out's dtype, else through ``scratch`` (a's dtype)
void accumulate_product(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const at::Tensor& scratch) {
  if (a.scalar_type() == out.scalar_type()) {
    product(out, a, b, true);
  } else {
    at::Tensor out_product = scratch.narrow(0, 0, out.numel()).view(out.sizes());
    product(out_product, a, b, false);
    out.add_(out_product);
  }
}

// Positions per dL/dhidden work item: as many as make it cost what a dL/dweight item of tile_rows vocabulary
// rows does, but at least kMinTokenRows (fewer would re-read the head chunk for a sliver of rows). Depends on
// the block's sizes only, never on the thread count.
constexpr int64_t kMinTokenRows = 16;
int64_t token_item_rows(int64_t tile_rows, int64_t positions, int64_t width) {
  const int64_t balanced = tile_rows * positions / width;
  return std::min(positions, std::max(balanced, std::min(kMinTokenRows, tile_rows)));  // tile_rows > 0
}

template <typename acc_t, bool kSoftcap, bool kEntropy>
void run(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows, const at::Tensor& targets,
         const Scales<acc_t>& scales, double temperature, const at::Tensor& lse,
         const std::optional<at::Tensor>& entropy,
         const at::Tensor& grad_chosen, const at::Tensor& grad_lse, const std::optional<at::Tensor>& grad_entropy,
         const std::optional<at::Tensor>& grad_hidden, const std::optional<at::Tensor>& grad_weight,
         const std::optional<at::Tensor>& grad_bias, at::ScalarType mm_dtype, const BackwardBlocks& blocks) {
  const int64_t num_positions = rows.numel(), vocab = weight.size(0), dim = weight.size(1);
  const int64_t token_block = std::min(blocks.token_block, num_positions);
  const int64_t vocab_block = std::min(blocks.vocab_block, vocab);
  const int64_t tile_rows = blocks.tile_rows, tile_vocab = std::min(blocks.tile_vocab, vocab_block);
  const at::ScalarType acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
  const auto acc_options = hidden.options().dtype(acc_dtype);
  const auto mm_options = hidden.options().dtype(mm_dtype);
  const acc_t inv_temperature = acc_t(1) / static_cast<acc_t>(temperature);
  const int64_t threads = at::get_num_threads();

  LogitsProduct logits(dim, mm_dtype, acc_dtype, blocks.engine, tile_vocab, blocks.tile_tokens, threads);
  const int64_t tile_tokens = logits.tile_tokens();
  // per thread: where the matmul dtype is narrower, a product buffer for the rows of its largest work item: a
  // dL/dweight item's tile_rows, or a dL/dhidden item's positions, most of them in a full token block against
  // the narrowest chunk (token_item_rows grows with the positions and shrinks with the width)
  const int64_t narrowest = vocab % vocab_block == 0 ? vocab_block : vocab % vocab_block;
  const int64_t item_rows = std::max(tile_rows, token_item_rows(tile_rows, token_block, narrowest));
  std::vector<at::Tensor> scratch;
  for (int64_t i = 0; i < threads && mm_dtype != acc_dtype; ++i) {
    scratch.push_back(at::empty({item_rows * dim}, mm_options));
  }
  const auto scratch_of = [&](int64_t tid) { return scratch.empty() ? at::Tensor() : scratch[tid]; };
  const at::Tensor h_all = hidden.index_select(0, rows).to(mm_dtype).contiguous();
  // dL/dlogits of one (chunk x block), transposed: (vocab rows, position columns)
  const at::Tensor grad_logits_buffer = at::empty({vocab_block * token_block}, mm_options);
  const at::Tensor weight_acc = grad_weight ? at::empty({vocab_block, dim}, acc_options) : at::Tensor();
  const at::Tensor bias_acc = grad_bias ? at::empty({vocab_block}, acc_options) : at::Tensor();
  // each token tile's row sums of dL/dlogits, taken from the tile in the accumulation dtype (the buffer the
  // gradient products read may be bf16), then added over the tiles in order
  const at::Tensor bias_parts =
      grad_bias ? at::empty({(token_block + tile_tokens - 1) / tile_tokens, vocab_block}, acc_options) : at::Tensor();
  if (grad_hidden) grad_hidden->zero_();

  const int64_t* target_ptr = targets.const_data_ptr<int64_t>();
  const acc_t* entropy_ptr = kEntropy ? entropy->const_data_ptr<acc_t>() : nullptr;
  const acc_t* grad_entropy_ptr = kEntropy ? grad_entropy->const_data_ptr<acc_t>() : nullptr;
  const auto positions_from = [&](int64_t n) {
    return PositionGrads<acc_t>{target_ptr + n, lse.const_data_ptr<acc_t>() + n,
                                kEntropy ? entropy_ptr + n : nullptr, grad_chosen.const_data_ptr<acc_t>() + n,
                                grad_lse.const_data_ptr<acc_t>() + n, kEntropy ? grad_entropy_ptr + n : nullptr};
  };

  for (int64_t v0 = 0; v0 < vocab; v0 += vocab_block) {
    const int64_t width = std::min(vocab_block, vocab - v0);
    const at::Tensor head = logits.head_rows(weight, v0, width, 0);  // (width, D or D padded), matmul dtype
    const at::Tensor w = head.narrow(1, 0, dim);
    if (grad_weight) weight_acc.zero_();
    if (grad_bias) bias_acc.zero_();
    for (int64_t p0 = 0; p0 < num_positions; p0 += token_block) {
      const int64_t positions = std::min(token_block, num_positions - p0);
      const at::Tensor h = h_all.narrow(0, p0, positions);
      logits.set_tokens(h);
      const at::Tensor grad_logits = grad_logits_buffer.narrow(0, 0, width * positions).view({width, positions});

      parallel_for(0, logits.num_tiles(), 1, [&](int64_t begin, int64_t end) {
        const int64_t tid = at::get_thread_num();
        for (int64_t t = begin; t < end; ++t) {
          const int64_t t0 = t * tile_tokens, cols = logits.tile_columns(t);
          for (int64_t j0 = 0; j0 < width; j0 += tile_vocab) {
            const int64_t tile_width = std::min(tile_vocab, width - j0);
            const at::Tensor tile = logits.tile(head, j0, tile_width, t, tid);
            logits_grad_tile<acc_t, kSoftcap, kEntropy>(tile.data_ptr<acc_t>(), tile_width, tile.size(1), cols,
                                                        v0 + j0, scales, inv_temperature,
                                                        positions_from(p0 + t0));
            const at::Tensor real = tile.narrow(1, 0, cols);
            grad_logits.narrow(0, j0, tile_width).narrow(1, t0, cols).copy_(real);
            if (grad_bias) {
              OneThread one_thread;  // a fixed summation order whatever the thread count
              at::Tensor sums = bias_parts[t].narrow(0, j0, tile_width);
              at::sum_out(sums, real, 1);
            }
          }
        }
        logits.release();  // before at::mm: oneDNN's own kernels leave the matrix units unconfigured
      });

      // work items: dL/dhidden row blocks, then dL/dweight (and bias) row blocks, of about equal cost (a
      // dL/dhidden row costs width, a dL/dweight row positions): parallel_for hands each thread one contiguous
      // run of items, and with tile_rows rows each the default blocks gave 2 threads 10 units of work to 6
      const int64_t token_tiles = logits.num_tiles();
      const int64_t token_rows = token_item_rows(tile_rows, positions, width);
      const int64_t token_items = grad_hidden ? (positions + token_rows - 1) / token_rows : 0;
      const int64_t vocab_items = grad_weight || grad_bias ? (width + tile_rows - 1) / tile_rows : 0;
      parallel_for(0, token_items + vocab_items, 1, [&](int64_t begin, int64_t end) {
        const int64_t tid = at::get_thread_num();
        for (int64_t item = begin; item < end; ++item) {
          if (item < token_items) {
            const int64_t r0 = item * token_rows, rows = std::min(token_rows, positions - r0);
            accumulate_product(grad_hidden->narrow(0, p0 + r0, rows), grad_logits.narrow(1, r0, rows).t(), w,
                               scratch_of(tid));
            continue;
          }
          const int64_t j0 = (item - token_items) * tile_rows, height = std::min(tile_rows, width - j0);
          if (grad_weight) accumulate_product(weight_acc.narrow(0, j0, height), grad_logits.narrow(0, j0, height), h,
                                              scratch_of(tid));
          if (grad_bias) {
            at::Tensor sums = bias_acc.narrow(0, j0, height);
            for (int64_t tile = 0; tile < token_tiles; ++tile) sums.add_(bias_parts[tile].narrow(0, j0, height));
          }
        }
      });
    }
    if (grad_weight) grad_weight->narrow(0, v0, width).copy_(weight_acc.narrow(0, 0, width));
    if (grad_bias) grad_bias->narrow(0, v0, width).copy_(bias_acc.narrow(0, 0, width));
  }
}

void check_output(const std::optional<at::Tensor>& t, const char* name, at::IntArrayRef shape) {
  if (!t) return;
  TORCH_CHECK(t->device().is_cpu() && t->is_floating_point() && t->is_contiguous() && t->sizes() == shape, name,
              " must be a contiguous float CPU tensor of shape ", shape);
}

}  // namespace

void backward(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows, const at::Tensor& targets,
              const std::optional<at::Tensor>& bias, double pre, std::optional<double> post, double temperature,
              const at::Tensor& lse, const std::optional<at::Tensor>& entropy, const at::Tensor& grad_chosen,
              const at::Tensor& grad_lse, const std::optional<at::Tensor>& grad_entropy,
              const std::optional<at::Tensor>& grad_hidden, const std::optional<at::Tensor>& grad_weight,
              const std::optional<at::Tensor>& grad_bias, at::ScalarType mm_dtype, const BackwardBlocks& blocks) {
  check_matrices(hidden, weight);
  TORCH_CHECK(blocks.token_block > 0 && blocks.vocab_block > 0 && blocks.tile_rows > 0 && blocks.tile_tokens > 0 &&
                  blocks.tile_vocab > 0,
              "block sizes must be > 0");
  TORCH_CHECK(entropy.has_value() == grad_entropy.has_value(), "entropy and grad_entropy come together");
  const int64_t n = rows.numel(), vocab = weight.size(0);
  const at::ScalarType acc = lse.scalar_type();
  check_vector(rows, "rows", at::kLong, n);
  check_vector(targets, "targets", at::kLong, n);
  check_vector(lse, "lse", acc, n);
  check_vector(grad_chosen, "grad_chosen", acc, n);
  check_vector(grad_lse, "grad_lse", acc, n);
  if (entropy) check_vector(*entropy, "entropy", acc, n);
  if (grad_entropy) check_vector(*grad_entropy, "grad_entropy", acc, n);
  if (bias) check_vector(*bias, "bias", acc, vocab);
  check_output(grad_hidden, "grad_hidden", {n, weight.size(1)});
  check_output(grad_weight, "grad_weight", weight.sizes());
  check_output(grad_bias, "grad_bias", {vocab});
  TORCH_CHECK(!grad_hidden || grad_hidden->scalar_type() == acc, "grad_hidden must be ", acc);
  if (n == 0) {  // no position: zero gradients
    for (const auto* out : {&grad_hidden, &grad_weight, &grad_bias}) {
      if (*out) (*out)->zero_();
    }
    return;
  }

  AT_DISPATCH_FLOATING_TYPES(acc, "endokernel::backward", [&] {
    const Scales<scalar_t> scales{static_cast<scalar_t>(pre), static_cast<scalar_t>(post.value_or(1.0)),
                                  post.has_value(), bias ? bias->const_data_ptr<scalar_t>() : nullptr};
    const auto call = [&](auto softcap, auto with_entropy) {
      run<scalar_t, decltype(softcap)::value, decltype(with_entropy)::value>(
          hidden.contiguous(), weight.contiguous(), rows, targets, scales, temperature, lse, entropy, grad_chosen,
          grad_lse, grad_entropy, grad_hidden, grad_weight, grad_bias, mm_dtype, blocks);
    };
    using Yes = std::true_type;
    using No = std::false_type;
    if (post.has_value()) {
      entropy.has_value() ? call(Yes{}, Yes{}) : call(Yes{}, No{});
    } else {
      entropy.has_value() ? call(No{}, Yes{}) : call(No{}, No{});
    }
  });
}

}  // namespace endokernel
