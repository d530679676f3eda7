// The forward statistics as one C++ tile loop (see endokernel/backends/cpp/backend.py for the contract).
//
// Loop order: token super-blocks (gathered and packed as matmul panels once), then one group of token tiles per
// thread, in which vocabulary tiles (the head's rows, read in place) meet the group's token tiles. Each (vocab
// tile x token tile) logits tile is small enough to stay in L2 and is folded by the one-pass epilogue right
// after its matmul; a vocab tile stays in the thread's L2 across its group's token tiles. One barrier per
// super-block: threads never wait on each other per tile, which matters on a shared machine. A position
// meets the vocabulary tiles in order whatever group it is in: results are bitwise identical for any number
// of threads.
#include "chosen_and_lse.h"

#include <ATen/Dispatch.h>
#include "parallel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "checks.h"
#include "epilogue.h"
#include "logits_product.h"

namespace endokernel {
namespace {

template <typename acc_t, bool kSoftcap, bool kEntropy>
void run(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& rows, const at::Tensor& targets,
         const Scales<acc_t>& scales, double temperature, const at::Tensor& chosen_out, const at::Tensor& lse_out,
         const std::optional<at::Tensor>& entropy_out, at::ScalarType mm_dtype, const Blocks& blocks) {
  const int64_t num_positions = rows.numel(), vocab = weight.size(0);
  const int64_t tile_vocab = std::min(blocks.tile_vocab, vocab);
  const at::ScalarType acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
  LogitsProduct product(weight.size(1), mm_dtype, acc_dtype, blocks.engine, tile_vocab, blocks.tile_tokens,
                        at::get_num_threads());

  // base-2 scales, the bias folded into a per-id offset
  const acc_t slope = kSoftcap ? scales.pre : scales.pre * acc_t(kLog2e);
  std::vector<acc_t> offset(scales.bias != nullptr ? vocab : 0);
  for (int64_t j = 0; j < static_cast<int64_t>(offset.size()); ++j) offset[j] = scales.bias[j] * slope;
  const Log2Scales<acc_t> log2_scales{slope, scales.post * acc_t(kLog2e), offset.empty() ? nullptr : offset.data()};

  std::vector<acc_t> ref(num_positions), sum(num_positions), dev(num_positions), chosen(num_positions, acc_t(0));
  const int64_t* target_ptr = targets.const_data_ptr<int64_t>();
  for (int64_t p0 = 0; p0 < num_positions; p0 += blocks.token_block) {
    const int64_t positions = std::min(blocks.token_block, num_positions - p0);
    product.set_tokens(hidden.index_select(0, rows.narrow(0, p0, positions)));
    const int64_t tiles = product.num_tiles(), groups = std::min<int64_t>(tiles, at::get_num_threads());
    parallel_for(0, groups, 1, [&](int64_t group_begin, int64_t group_end) {
      const int64_t tid = at::get_thread_num();
      const int64_t begin = group_begin * tiles / groups, end = group_end * tiles / groups;
      for (int64_t v0 = 0; v0 < vocab; v0 += tile_vocab) {
        const int64_t width = std::min(tile_vocab, vocab - v0);
        const at::Tensor head = product.head_rows(weight, v0, width, tid);
        for (int64_t t = begin; t < end; ++t) {
          const int64_t n0 = p0 + t * product.tile_tokens();
          const at::Tensor tile = product.tile(head, 0, width, t, tid);
          fold_tile<acc_t, kSoftcap, kEntropy>(tile.const_data_ptr<acc_t>(), width, tile.size(1),
                                               product.tile_columns(t), v0, target_ptr + n0, scales, log2_scales,
                                               v0 == 0, {ref.data() + n0, sum.data() + n0, dev.data() + n0,
                                                         chosen.data() + n0});
        }
      }
      product.release();
    });
  }

  acc_t* chosen_ptr = chosen_out.data_ptr<acc_t>();
  acc_t* lse_ptr = lse_out.data_ptr<acc_t>();
  acc_t* entropy_ptr = kEntropy ? entropy_out->data_ptr<acc_t>() : nullptr;
  const acc_t t = static_cast<acc_t>(temperature), ln2 = static_cast<acc_t>(kLn2);
  for (int64_t i = 0; i < num_positions; ++i) {
    chosen_ptr[i] = chosen[i] * t;  // 0 where there is no target
    lse_ptr[i] = (ref[i] + std::log2(sum[i])) * ln2 * t;
    if constexpr (kEntropy) entropy_ptr[i] = std::log(sum[i]) - ln2 * dev[i] / sum[i];
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
    const auto call = [&](auto softcap, auto entropy) {
      run<scalar_t, decltype(softcap)::value, decltype(entropy)::value>(
          hidden.contiguous(), weight.contiguous(), rows, targets, scales, temperature, chosen_out, lse_out,
          entropy_out, mm_dtype, blocks);
    };
    using Yes = std::true_type;
    using No = std::false_type;
    if (post.has_value()) {
      entropy_out.has_value() ? call(Yes{}, Yes{}) : call(Yes{}, No{});
    } else {
      entropy_out.has_value() ? call(No{}, Yes{}) : call(No{}, No{});
    }
  });
}

}  // namespace endokernel
