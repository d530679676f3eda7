// exp2 for the epilogues: a short polynomial in float (the sums it feeds are accurate to ~1e-7 relative either
// way), Sleef's in double (the float64 path is the tests' reference-grade one).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <limits>

namespace endokernel {

template <typename acc_t>
inline at::vec::Vectorized<acc_t> exp2(const at::vec::Vectorized<acc_t>& x) {
  return x.exp2();
}

// The least exponent the epilogues pass to exp2, that of the smallest normal number (-126 in float, -1022 in
// double): they clamp to it, so that -inf logits (a -inf bias) add a negligible 2^-126 (2^-1022) instead of NaN
// terms (0 * -inf) to the entropy sums, and probabilities below it carry at most that much absolute error.
template <typename acc_t>
constexpr acc_t kMinExponent = acc_t(std::numeric_limits<acc_t>::min_exponent - 1);

// 2^x for -126 <= x <= 127: 2^x = 2^n * 2^f, n = round(x), f in [-0.5, 0.5], 2^f by a degree-5 minimax
// polynomial (relative error 2.3e-7 in float evaluation; ATen's exp_u20 allows 20 ulp), 2^n built in the
// exponent field. About 10 vector operations, against ~20 for exp_u20.
template <>
inline at::vec::Vectorized<float> exp2<float>(const at::vec::Vectorized<float>& x) {
  using Vec = at::vec::Vectorized<float>;
  const Vec n = x.round();
  const Vec f = x - n;
  Vec p = at::vec::fmadd(f, Vec(0.001327644451521337f), Vec(0.00967553723603487f));
  p = at::vec::fmadd(p, f, Vec(0.05550713464617729f));
  p = at::vec::fmadd(p, f, Vec(0.24022120237350464f));
  p = at::vec::fmadd(p, f, Vec(0.6931469440460205f));
  p = at::vec::fmadd(p, f, Vec(1.f));
  const auto exponent = (at::vec::convert_to_int_of_same_size(n) + at::vec::Vectorized<int32_t>(127))
                        << at::vec::Vectorized<int32_t>(23);
  return p * at::vec::cast<float>(exponent);
}

}  // namespace endokernel
