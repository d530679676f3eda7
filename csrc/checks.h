// Argument checks shared by the kernels' entry points (the Python side validates user input first).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace endokernel {

inline void check_vector(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t size) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == size && t.is_contiguous(), name, " must be contiguous of shape (", size,
              ")");
}

// hidden (M, D) and weight (V, D): CPU matrices sharing D
inline void check_matrices(const at::Tensor& hidden, const at::Tensor& weight) {
  TORCH_CHECK(hidden.device().is_cpu() && weight.device().is_cpu(), "the cpp backend runs on CPU tensors");
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "hidden (M, D) and weight (V, D) must share D");
}

}  // namespace endokernel
