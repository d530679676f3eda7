// The backward's fused epilogue: a recomputed transposed logits tile (one row per vocabulary id, one column
// per position) turned into dL/d(W h + b) in one vectorized pass, positions in the vector lanes (the C++ twin
// of endokernel/backends/logits_grad.py).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "epilogue.h"
#include "fast_math.h"

namespace endokernel {

// The saved statistics and upstream gradients of a run of positions (one entry per position; the entropy
// arrays unused without the entropy term).
template <typename acc_t>
struct PositionGrads {
  const int64_t* target;  // < 0: no chosen token
  const acc_t* lse;  // T * logsumexp(z / T)
  const acc_t* entropy;
  const acc_t* grad_chosen;
  const acc_t* grad_lse;
  const acc_t* grad_entropy;
};

// dz/da of one raw logit (scales with divisor 1: z = (a + b) * pre, or tanh((a + b) * pre) * post)
template <typename acc_t>
inline acc_t logit_slope(acc_t a, int64_t j, const Scales<acc_t>& scales) {
  if (!scales.softcap) return scales.pre;
  const acc_t t = std::tanh((scales.bias != nullptr ? a + scales.bias[j] : a) * scales.pre);
  return scales.pre * scales.post * (1 - t * t);
}

// Overwrites tile ``c`` (``width`` rows of raw logits a of vocabulary ids v0 .., ``cols`` positions in columns,
// row stride ``ld``, a multiple of the vector width) with dL/da. With log p = (z - lse) / T:
// dL/dz = p * (grad_lse - grad_entropy / T * (log p + entropy)) + one_hot(target) * grad_chosen,
// dL/da = dL/dz * dz/da. In base 2, x = log2(e) * (z - lse) / T: p = 2^x, log p = ln(2) * x, so the
// coefficient is c1 - c2 * x per position, c1 = grad_lse - grad_entropy / T * entropy, c2 = grad_entropy / T * ln 2.
template <typename acc_t, bool kSoftcap, bool kEntropy>
void logits_grad_tile(acc_t* c, int64_t width, int64_t ld, int64_t cols, int64_t v0, const Scales<acc_t>& scales,
                      acc_t inv_temperature, const PositionGrads<acc_t>& g) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t lanes = Vec::size();
  // the chosen tokens' dz/da, read before the tile is overwritten
  constexpr int64_t kNoTarget = -1;
  int64_t hits = 0;
  for (int64_t i = 0; i < cols; ++i) hits += g.target[i] >= v0 && g.target[i] < v0 + width;
  std::vector<acc_t> chosen_slope(hits > 0 ? cols : 0);
  for (int64_t i = 0; i < cols && hits > 0; ++i) {
    const int64_t j = g.target[i] >= v0 && g.target[i] < v0 + width ? g.target[i] - v0 : kNoTarget;
    chosen_slope[i] = j == kNoTarget ? acc_t(0) : logit_slope(c[j * ld + i], v0 + j, scales);
  }

  const acc_t z_to_x = acc_t(kLog2e) * inv_temperature;
  const Vec pre(scales.pre), post(scales.post), pre_post(scales.pre * scales.post), one(acc_t(1)), vz_to_x(z_to_x),
      lo(kMinExponent<acc_t>);
  for (int64_t c0 = 0; c0 < cols; c0 += lanes) {
    const int64_t count = std::min(lanes, cols - c0);
    const Vec lse2 = Vec::loadu(g.lse + c0, count) * vz_to_x;
    const Vec grad_lse = Vec::loadu(g.grad_lse + c0, count);
    Vec c1 = grad_lse, c2(acc_t(0));
    if constexpr (kEntropy) {
      const Vec grad_entropy_t = Vec::loadu(g.grad_entropy + c0, count) * Vec(inv_temperature);
      c1 = grad_lse - grad_entropy_t * Vec::loadu(g.entropy + c0, count);
      c2 = grad_entropy_t * Vec(acc_t(kLn2));
    }
    for (int64_t j = 0; j < width; ++j) {
      acc_t* row = c + j * ld + c0;
      const Vec offset(scales.bias != nullptr ? scales.bias[v0 + j] * scales.pre : acc_t(0));
      const Vec u = at::vec::fmadd(Vec::loadu(row), pre, offset);
      Vec z = u, slope = pre;
      if constexpr (kSoftcap) {
        const Vec t = u.tanh();
        z = t * post;
        slope = pre_post * (one - t * t);
      }
      const Vec x = at::vec::clamp_min(z * vz_to_x - lse2, lo);
      const Vec p = exp2<acc_t>(x);
      const Vec coefficient = kEntropy ? c1 - c2 * x : c1;
      (p * coefficient * slope).store(row);
    }
  }
  for (int64_t i = 0; i < cols && hits > 0; ++i) {
    if (g.target[i] >= v0 && g.target[i] < v0 + width) {
      c[(g.target[i] - v0) * ld + i] += g.grad_chosen[i] * chosen_slope[i];
    }
  }
}

}  // namespace endokernel
