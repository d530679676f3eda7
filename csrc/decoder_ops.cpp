// Fused RMSNorm and act(gate) * up (see decoder_ops.h). Each row (or block of elements) is widened to float in a
// thread-local buffer that stays in L1/L2, computed with at::vec, and narrowed once: one read and one write of
// memory per tensor, where the modules' own forward makes five to eight passes and allocates a float copy.
#include "decoder_ops.h"

#include "parallel.h"
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <vector>

namespace endokernel {
namespace {

using Vec = at::vec::Vectorized<float>;

// f(T{}) for the dtypes fused here, float32 and bfloat16 (float16 CPU models keep the modules' own forward)
template <typename F>
void with_dtype(at::ScalarType dtype, const char* name, F&& f) {
  switch (dtype) {
    case at::kFloat: return f(float{});
    case at::kBFloat16: return f(at::BFloat16{});
    default: TORCH_CHECK(false, name, ": float32 or bfloat16 tensors, got ", dtype);
  }
}

// dst = round_T(src): float -> T -> float, the rounding a module's cast to T applies (none for float)
template <typename T>
void round_through(float* data, T* scratch, int64_t n) {
  if constexpr (!std::is_same_v<T, float>) {
    at::vec::convert(data, scratch, n);
    at::vec::convert(scratch, data, n);
  }
}

template <typename x_t, typename w_t, typename out_t>
void rms_norm_rows(const x_t* x, const w_t* weight, out_t* out, int64_t rows, int64_t width, float eps,
                   bool unit_offset) {
  std::vector<float> w(width);
  at::vec::convert(weight, w.data(), width);
  if (unit_offset) {
    for (float& v : w) v += 1.f;  // (1 + weight) in float, as Gemma's module adds it
  }
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / width), [&](int64_t begin, int64_t end) {
    std::vector<float> row(width);
    std::vector<x_t> narrow(width);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t offset = r * width;
      at::vec::convert(x + offset, row.data(), width);
      Vec squares(0.f);
      int64_t j = 0;
      for (; j + Vec::size() <= width; j += Vec::size()) {
        const Vec v = Vec::loadu(row.data() + j);
        squares = at::vec::fmadd(v, v, squares);
      }
      float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, squares);
      for (; j < width; ++j) sum += row[j] * row[j];
      const float scale = 1.f / std::sqrt(sum / static_cast<float>(width) + eps);
      if (unit_offset) {
        at::vec::map2([scale](Vec v, Vec g) { return v * Vec(scale) * g; }, row.data(), row.data(), w.data(), width);
      } else {
        at::vec::map([scale](Vec v) { return v * Vec(scale); }, row.data(), row.data(), width);
        round_through(row.data(), narrow.data(), width);  // the module casts x * r back to x's dtype first
        at::vec::map2([](Vec v, Vec g) { return v * g; }, row.data(), row.data(), w.data(), width);
      }
      at::vec::convert(row.data(), out + offset, width);
    }
  });
}

inline Vec activate(const Vec& g, Activation activation) {
  if (activation == Activation::kSilu) {
    return g / (Vec(1.f) + g.neg().exp());  // torch's own silu expression
  }
  const Vec beta(static_cast<float>(M_SQRT2 * M_2_SQRTPI * 0.5)), kappa(0.044715f);
  const Vec inner = beta * (g + kappa * (g * g * g));  // torch's gelu(approximate='tanh')
  return Vec(0.5f) * g * (Vec(1.f) + inner.tanh());
}

template <typename T>
void act_mul_elements(T* gate, const T* up, int64_t numel, Activation activation) {
  constexpr int64_t kBlock = 2048;
  parallel_for(0, (numel + kBlock - 1) / kBlock, 8, [&](int64_t begin, int64_t end) {
    float g[kBlock], u[kBlock];
    T narrow[kBlock];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t first = b * kBlock, n = std::min(kBlock, numel - first);
      at::vec::convert(gate + first, g, n);
      at::vec::convert(up + first, u, n);
      at::vec::map([activation](Vec v) { return activate(v, activation); }, g, g, n);
      round_through(g, narrow, n);  // act_fn's output is a tensor of T before the product
      at::vec::map2([](Vec a, Vec b) { return a * b; }, g, g, u, n);
      at::vec::convert(g, gate + first, n);
    }
  });
}

template <typename T>
void merge_rows(const at::Tensor& o1, const at::Tensor& lse1, const at::Tensor& o2, const at::Tensor& lse2,
                const at::Tensor& out) {
  const int64_t batch = o1.size(0), heads = o1.size(1), length = o1.size(2), width = o1.size(3);
  const auto lse1_a = lse1.accessor<float, 3>(), lse2_a = lse2.accessor<float, 3>();
  const T* a = o1.const_data_ptr<T>();
  const T* b = o2.const_data_ptr<T>();
  T* o = out.mutable_data_ptr<T>();
  parallel_for(0, batch * length, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> x(width), y(width);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / length, i = row % length;
      for (int64_t h = 0; h < heads; ++h) {
        const float l1 = lse1_a[n][h][i], l2 = lse2_a[n][h][i];
        const float top = std::max(l1, l2);
        const float e1 = std::exp(l1 - top), e2 = std::exp(l2 - top), total = e1 + e2;
        const float w1 = e1 / total, w2 = e2 / total;
        at::vec::convert(a + n * o1.stride(0) + h * o1.stride(1) + i * o1.stride(2), x.data(), width);
        at::vec::convert(b + n * o2.stride(0) + h * o2.stride(1) + i * o2.stride(2), y.data(), width);
        at::vec::map2([w1, w2](Vec u, Vec v) { return u * Vec(w1) + v * Vec(w2); }, x.data(), x.data(), y.data(),
                      width);
        at::vec::convert(x.data(), o + ((n * length + i) * heads + h) * width, width);
      }
    }
  });
}

}  // namespace

void merge_attention(const at::Tensor& o1, const at::Tensor& lse1, const at::Tensor& o2, const at::Tensor& lse2,
                     const at::Tensor& out) {
  TORCH_CHECK(o1.device().is_cpu() && o2.device().is_cpu() && out.device().is_cpu(), "merge_attention runs on CPU");
  TORCH_CHECK(o1.dim() == 4 && o1.sizes() == o2.sizes() && o1.stride(3) == 1 && o2.stride(3) == 1,
              "merge_attention: o1 and o2 (B, H, L, Dh) with Dh contiguous");
  const std::vector<int64_t> stats{o1.size(0), o1.size(1), o1.size(2)};
  TORCH_CHECK(lse1.sizes() == stats && lse2.sizes() == stats && lse1.scalar_type() == at::kFloat &&
                  lse2.scalar_type() == at::kFloat,
              "merge_attention: lse1 and lse2 (B, H, L) float32");
  const std::vector<int64_t> merged{o1.size(0), o1.size(2), o1.size(1), o1.size(3)};
  TORCH_CHECK(out.is_contiguous() && out.sizes() == merged, "merge_attention: out (B, L, H, Dh) contiguous");
  TORCH_CHECK(o1.scalar_type() == o2.scalar_type() && out.scalar_type() == o1.scalar_type(),
              "merge_attention: o1, o2 and out of one dtype");
  with_dtype(o1.scalar_type(), "merge_attention", [&](auto tag) { merge_rows<decltype(tag)>(o1, lse1, o2, lse2, out); });
}

void rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool unit_offset, const at::Tensor& out) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu() && out.device().is_cpu(), "rms_norm runs on CPU");
  TORCH_CHECK(x.is_contiguous() && out.is_contiguous() && weight.is_contiguous(), "rms_norm needs contiguous tensors");
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && x.size(-1) == weight.size(0) && out.sizes() == x.sizes(),
              "rms_norm: x (..., H), weight (H,) and out of x's shape");
  const int64_t width = weight.size(0), rows = width == 0 ? 0 : x.numel() / width;
  const auto same_or_float = [&](const at::Tensor& t) {
    return t.scalar_type() == x.scalar_type() || t.scalar_type() == at::kFloat;
  };
  TORCH_CHECK(same_or_float(weight) && same_or_float(out), "rms_norm: weight and out in x's dtype or float32");
  with_dtype(x.scalar_type(), "rms_norm", [&](auto x_tag) {
    using x_t = decltype(x_tag);
    const auto run = [&](auto w_tag, auto out_tag) {
      using w_t = decltype(w_tag);
      using out_t = decltype(out_tag);
      rms_norm_rows(x.const_data_ptr<x_t>(), weight.const_data_ptr<w_t>(), out.mutable_data_ptr<out_t>(), rows, width,
                    static_cast<float>(eps), unit_offset);
    };
    const bool float_weight = weight.scalar_type() == at::kFloat, float_out = out.scalar_type() == at::kFloat;
    if (float_weight && float_out) {
      run(float{}, float{});
    } else if (float_weight) {
      run(float{}, x_t{});
    } else if (float_out) {
      run(x_t{}, float{});
    } else {
      run(x_t{}, x_t{});
    }
  });
}

void act_mul_(const at::Tensor& gate, const at::Tensor& up, Activation activation) {
  TORCH_CHECK(gate.device().is_cpu() && up.device().is_cpu(), "act_mul_ runs on CPU");
  TORCH_CHECK(gate.is_contiguous() && up.is_contiguous() && gate.sizes() == up.sizes() &&
                  gate.scalar_type() == up.scalar_type(),
              "act_mul_: gate and up contiguous, of one shape and dtype");
  TORCH_CHECK(activation == Activation::kSilu || activation == Activation::kGeluTanh, "act_mul_: unknown activation");
  with_dtype(gate.scalar_type(), "act_mul_", [&](auto tag) {
    using T = decltype(tag);
    act_mul_elements(gate.mutable_data_ptr<T>(), up.const_data_ptr<T>(), gate.numel(), activation);
  });
}

}  // namespace endokernel
