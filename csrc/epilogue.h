// The fused epilogue: one logits tile row, right after its matmul, folded into a position's running
// (max, sum of exp, sum of exp * (s - max)) in two vectorized passes over the L1-resident row.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace endokernel {

// How raw logits a = (W h)[j] become scaled ones s = z / T: s = (a + bias[j]) * pre, then with a softcap
// s = tanh(s) * post (pre and post fold logit_scale, softcap and 1 / T, see LogitTransform.folded_scales).
template <typename acc_t>
struct Scales {
  acc_t pre;
  acc_t post;
  bool softcap;
  const acc_t* bias;  // (V,) or nullptr
};

// One position's statistics over the vocabulary tiles seen so far, in s = z / T units.
template <typename acc_t>
struct Running {
  acc_t max = -std::numeric_limits<acc_t>::infinity();
  acc_t sum = 0;  // sum of exp(s - max)
  acc_t dev = 0;  // sum of exp(s - max) * (s - max), for the entropy
  acc_t chosen = 0;  // s[target]
};

// Folds row ``x`` (n raw logits of vocabulary ids v0 .. v0 + n) into ``state``, overwriting ``x`` with s.
// The lanes of each vector reduce in a fixed order, so a row's result never depends on the thread count.
template <typename acc_t>
inline void fold_row(acc_t* x, int64_t n, int64_t v0, int64_t target, const Scales<acc_t>& scales,
                     bool with_entropy, Running<acc_t>& state) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t width = Vec::size();
  const Vec pre(scales.pre), post(scales.post), neg_inf(-std::numeric_limits<acc_t>::infinity()), zero(acc_t(0));

  Vec vmax = neg_inf;
  for (int64_t j = 0; j < n; j += width) {
    const int64_t count = std::min(width, n - j);
    Vec s = Vec::loadu(x + j, count);
    if (scales.bias != nullptr) s = s + Vec::loadu(scales.bias + v0 + j, count);
    s = s * pre;
    if (scales.softcap) s = s.tanh() * post;
    s.store(x + j, count);
    vmax = at::vec::maximum(vmax, Vec::set(neg_inf, s, count));  // padding lanes stay -inf
  }
  const acc_t tile_max = at::vec::vec_reduce_all<acc_t>([](Vec a, Vec b) { return at::vec::maximum(a, b); }, vmax);

  const Vec vtile_max(tile_max);
  Vec vsum = zero, vdev = zero;
  for (int64_t j = 0; j < n; j += width) {
    const int64_t count = std::min(width, n - j);
    const Vec shifted = Vec::loadu(x + j, count) - vtile_max;
    const Vec e = Vec::set(zero, shifted.exp_u20(), count);  // padding lanes add 0
    vsum = vsum + e;
    if (with_entropy) vdev = vdev + Vec::set(zero, e * shifted, count);
  }
  const auto add = [](Vec a, Vec b) { return a + b; };
  const acc_t tile_sum = at::vec::vec_reduce_all<acc_t>(add, vsum);
  const acc_t tile_dev = with_entropy ? at::vec::vec_reduce_all<acc_t>(add, vdev) : acc_t(0);

  if (target >= v0 && target < v0 + n) state.chosen = x[target - v0];
  // merge with the running state, both sums re-centred on the new max (as torch_tiled does per tile)
  const acc_t new_max = std::max(state.max, tile_max);
  const acc_t old_shift = state.max - new_max, tile_shift = tile_max - new_max;
  const acc_t old_scale = std::exp(old_shift), tile_scale = std::exp(tile_shift);
  if (with_entropy) {
    const acc_t old_dev = state.sum == 0 ? acc_t(0) : old_scale * (state.dev + old_shift * state.sum);
    state.dev = old_dev + tile_scale * (tile_dev + tile_shift * tile_sum);
  }
  state.sum = state.sum * old_scale + tile_sum * tile_scale;
  state.max = new_max;
}

}  // namespace endokernel
