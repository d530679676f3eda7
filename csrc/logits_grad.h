// The backward's fused epilogue: one recomputed logits tile row turned into dL/d(W h + b) in one vectorized
// pass (the C++ twin of endokernel/backends/logits_grad.py).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "epilogue.h"

namespace endokernel {

// One position's saved statistics and upstream gradients (entropy terms unused unless ``with_entropy``).
template <typename acc_t>
struct PositionGrad {
  int64_t target;  // < 0: no chosen token
  acc_t lse;  // T * logsumexp(z / T)
  acc_t entropy;
  acc_t grad_chosen;
  acc_t grad_lse;
  acc_t grad_entropy;
};

// Overwrites row ``x`` (n raw logits a of vocabulary ids v0 .. v0 + n) with dL/da, where (scales with
// divisor 1) z = (a + b) * pre, or tanh((a + b) * pre) * post with a softcap, and with log p = (z - lse) / T:
// dL/dz = p * (grad_lse - grad_entropy / T * (log p + entropy)) + one_hot(target) * grad_chosen,
// dL/da = dL/dz * dz/da, dz/da = pre * post * (1 - tanh^2) with a softcap, else pre.
template <typename acc_t>
inline void logits_grad_row(acc_t* x, int64_t n, int64_t v0, const Scales<acc_t>& scales, acc_t inv_temperature,
                            bool with_entropy, const PositionGrad<acc_t>& g) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t width = Vec::size();
  const acc_t scale = scales.softcap ? scales.pre * scales.post : scales.pre;

  // the chosen token's dz/da, read before the row is overwritten
  acc_t chosen_factor = 0;
  const bool hit = g.target >= v0 && g.target < v0 + n;
  if (hit) {
    acc_t u = x[g.target - v0];
    if (scales.bias != nullptr) u += scales.bias[g.target];
    u *= scales.pre;
    const acc_t t = std::tanh(u);
    chosen_factor = scales.softcap ? scale * (1 - t * t) : scale;
  }

  const Vec pre(scales.pre), post(scales.post), vscale(scale), one(acc_t(1)), inv_t(inv_temperature);
  const Vec lse(g.lse), entropy(g.entropy), grad_lse(g.grad_lse), grad_entropy_over_t(g.grad_entropy * inv_temperature);
  for (int64_t j = 0; j < n; j += width) {
    const int64_t count = std::min(width, n - j);
    Vec u = Vec::loadu(x + j, count);
    if (scales.bias != nullptr) u = u + Vec::loadu(scales.bias + v0 + j, count);
    u = u * pre;
    Vec z = u, factor = vscale;
    if (scales.softcap) {
      const Vec t = u.tanh();
      z = t * post;
      factor = vscale * (one - t * t);
    }
    const Vec log_p = (z - lse) * inv_t;
    Vec coefficient = grad_lse;
    if (with_entropy) coefficient = coefficient - grad_entropy_over_t * (log_p + entropy);
    (log_p.exp_u20() * coefficient * factor).store(x + j, count);
  }
  if (hit) x[g.target - v0] += g.grad_chosen * chosen_factor;
}

}  // namespace endokernel
