// The one matmul helper the ATen tile products multiply with, and the one-thread guard around it.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/mm.h>

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace endokernel {

// The BLAS libraries under ATen pick their blocking from the number of threads they may use (oneDNN from
// omp_get_max_threads(), which inside a worker of a parallel region still reads the outer team's size) and MKL
// splits long reductions differently by context: the same product then comes out with other roundings when
// the thread count changes. The kernels promise results independent of it, so every product here runs as a
// one-thread product (``OneThread``: the thread's OpenMP limit, which ATen's own ops read too, set to 1 around
// it) and reductions longer than kMaxDepth are cut into chunks added in a fixed order (measured on MKL 2024.2 / oneDNN 3.12: depths up to 512 agree in
// every context, 1024 and more do not).
constexpr int64_t kMaxDepth = 512;

class OneThread {
 public:
  OneThread() : before_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(before_); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int before_;
};

// out = a @ b (accumulate: out += a @ b), a (rows, K), b (K, cols), all of one dtype. Products in a narrower
// dtype than the caller accumulates in (bf16) are not chunked here: each chunk would be rounded to it.
inline void product(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  OneThread one_thread;
  const int64_t depth = a.size(1);
  const bool chunked = !at::isReducedFloatingType(out.scalar_type());
  const int64_t step = chunked ? kMaxDepth : std::max<int64_t>(depth, 1);
  for (int64_t k0 = 0; k0 < depth; k0 += step) {
    const int64_t k = std::min(step, depth - k0);
    const at::Tensor a_k = a.narrow(1, k0, k), b_k = b.narrow(0, k0, k);
    if (accumulate || k0 > 0) {
      out.addmm_(a_k, b_k);
    } else {
      at::mm_out(const_cast<at::Tensor&>(out), a_k, b_k);
    }
  }
  if (depth == 0 && !accumulate) out.zero_();
}

}  // namespace endokernel
