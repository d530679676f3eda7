// The forward's fused epilogue: a transposed logits tile (one row per vocabulary id, one column per position)
// folded into each position's running statistics in one read-only pass, positions in the vector lanes, so no
// horizontal reduction and no store per element.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "fast_math.h"

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

// s = z / T of one raw logit of vocabulary id j
template <typename acc_t>
inline acc_t scaled(acc_t a, int64_t j, const Scales<acc_t>& scales) {
  acc_t u = (scales.bias != nullptr ? a + scales.bias[j] : a) * scales.pre;
  return scales.softcap ? std::tanh(u) * scales.post : u;
}

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

// The same map in base-2 units, s2 = log2(e) * s: a * slope + offset[j] (no softcap; offset = bias * slope),
// or tanh(a * slope + offset[j]) * post2 (softcap; slope = pre, offset = bias * pre, post2 = post * log2(e)).
template <typename acc_t>
struct Log2Scales {
  acc_t slope;
  acc_t post2;
  const acc_t* offset;  // (V,) or nullptr
};

// Running statistics of a run of positions (structure of arrays, one entry per position), base 2: the sums
// are taken against a reference ``ref`` (the max of a position's first vocabulary tile, raised only when a
// later tile exceeds it by more than kHeadroom): sum = sum_j 2^(s2_j - ref), dev = sum_j 2^(s2_j - ref) *
// (s2_j - ref). Any reference gives the same statistics; one that is not the running max saves a pass.
template <typename acc_t>
struct StatsBlock {
  acc_t* ref;
  acc_t* sum;
  acc_t* dev;
  acc_t* chosen;  // s[target], natural units
};

// 2^64 per term keeps the sums of up to 2^60 terms finite in float
constexpr double kHeadroom = 64.0;

template <typename acc_t, bool kSoftcap>
inline at::vec::Vectorized<acc_t> log2_scaled(const acc_t* a, int64_t j, const Log2Scales<acc_t>& s) {
  using Vec = at::vec::Vectorized<acc_t>;
  const Vec u = at::vec::fmadd(Vec::loadu(a), Vec(s.slope), Vec(s.offset != nullptr ? s.offset[j] : acc_t(0)));
  if constexpr (kSoftcap) {
    return u.tanh() * Vec(s.post2);
  } else {
    return u;
  }
}

// One column block (the vector's lanes) of a tile: the tile's max, and its sums against ``ref``. Two
// accumulator sets, so that the adds of consecutive rows do not wait on each other.
template <typename acc_t, bool kSoftcap, bool kEntropy>
inline void fold_column(const acc_t* col, int64_t width, int64_t ld, int64_t v0, const Log2Scales<acc_t>& s,
                        const at::vec::Vectorized<acc_t>& ref, at::vec::Vectorized<acc_t>& tile_max,
                        at::vec::Vectorized<acc_t>& tile_sum, at::vec::Vectorized<acc_t>& tile_dev) {
  using Vec = at::vec::Vectorized<acc_t>;
  const Vec lo(kMinExponent<acc_t>);
  Vec max0(-std::numeric_limits<acc_t>::infinity()), max1 = max0, sum0(acc_t(0)), sum1 = sum0, dev0 = sum0,
      dev1 = sum0;
  const auto fold = [&](int64_t j, Vec& max, Vec& sum, Vec& dev) {
    const Vec s2 = log2_scaled<acc_t, kSoftcap>(col + j * ld, v0 + j, s);
    max = at::vec::clamp_min(max, s2);
    const Vec x = at::vec::clamp_min(s2 - ref, lo);
    const Vec e = exp2<acc_t>(x);
    sum = sum + e;
    if constexpr (kEntropy) dev = at::vec::fmadd(e, x, dev);
  };
  int64_t j = 0;
  for (; j + 1 < width; j += 2) {
    fold(j, max0, sum0, dev0);
    fold(j + 1, max1, sum1, dev1);
  }
  if (j < width) fold(j, max0, sum0, dev0);
  tile_max = at::vec::clamp_min(max0, max1);
  tile_sum = sum0 + sum1;
  tile_dev = dev0 + dev1;
}

template <typename acc_t, bool kSoftcap>
inline at::vec::Vectorized<acc_t> column_max(const acc_t* col, int64_t width, int64_t ld, int64_t v0,
                                             const Log2Scales<acc_t>& s) {
  at::vec::Vectorized<acc_t> max(-std::numeric_limits<acc_t>::infinity());
  for (int64_t j = 0; j < width; ++j) max = at::vec::clamp_min(max, log2_scaled<acc_t, kSoftcap>(col + j * ld, v0 + j, s));
  return max;
}

template <typename acc_t>
inline bool any_above(const at::vec::Vectorized<acc_t>& a, const at::vec::Vectorized<acc_t>& b, int64_t count) {
  constexpr int64_t lanes = at::vec::Vectorized<acc_t>::size();
  acc_t x[lanes], y[lanes];
  a.store(x);
  b.store(y);
  for (int64_t i = 0; i < count; ++i) {
    if (x[i] > y[i]) return true;
  }
  return false;
}

// Folds tile ``c`` (``width`` rows of vocabulary ids v0 .., ``cols`` positions in columns, row stride ``ld``,
// a multiple of the vector width) into those positions' statistics; ``first``: v0 == 0, the reference becomes
// the tile's max. Each position's lane meets the tiles in vocabulary order and reduces in a fixed order, so a
// result never depends on the thread count.
template <typename acc_t, bool kSoftcap, bool kEntropy>
void fold_tile(const acc_t* c, int64_t width, int64_t ld, int64_t cols, int64_t v0, const int64_t* targets,
               const Scales<acc_t>& scales, const Log2Scales<acc_t>& s, bool first, const StatsBlock<acc_t>& st) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t lanes = Vec::size();
  for (int64_t c0 = 0; c0 < cols; c0 += lanes) {
    const int64_t count = std::min(lanes, cols - c0);
    const acc_t* col = c + c0;
    Vec ref = first ? column_max<acc_t, kSoftcap>(col, width, ld, v0, s) : Vec::loadu(st.ref + c0, count);
    Vec sum = first ? Vec(acc_t(0)) : Vec::loadu(st.sum + c0, count);
    Vec dev = first || !kEntropy ? Vec(acc_t(0)) : Vec::loadu(st.dev + c0, count);
    Vec tile_max, tile_sum, tile_dev;
    fold_column<acc_t, kSoftcap, kEntropy>(col, width, ld, v0, s, ref, tile_max, tile_sum, tile_dev);
    if (!first && any_above(tile_max, ref + Vec(acc_t(kHeadroom)), count)) {
      // far above the reference (rare: a row's first tile is usually within a few units of its max):
      // re-centre the sums on the new max, fold the tile again
      const Vec new_ref = at::vec::clamp_min(ref, tile_max);
      const Vec shift = at::vec::clamp_min(ref - new_ref, Vec(kMinExponent<acc_t>));
      const Vec factor = exp2<acc_t>(shift);
      if constexpr (kEntropy) dev = factor * at::vec::fmadd(shift, sum, dev);
      sum = factor * sum;
      ref = new_ref;
      fold_column<acc_t, kSoftcap, kEntropy>(col, width, ld, v0, s, ref, tile_max, tile_sum, tile_dev);
    }
    ref.store(st.ref + c0, count);
    (sum + tile_sum).store(st.sum + c0, count);
    if constexpr (kEntropy) (dev + tile_dev).store(st.dev + c0, count);
  }
  for (int64_t i = 0; i < cols; ++i) {
    if (targets[i] >= v0 && targets[i] < v0 + width) st.chosen[i] = scaled(c[(targets[i] - v0) * ld + i], targets[i], scales);
  }
}

}  // namespace endokernel
