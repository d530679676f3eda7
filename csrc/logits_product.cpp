#include "logits_product.h"

#include "parallel.h"
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <exception>

#include "tile.h"

namespace endokernel {
namespace {

int64_t round_up(int64_t x, int64_t multiple) { return (x + multiple - 1) / multiple * multiple; }

#if defined(CPUBLAS_BRGEMM_BF16BF16F32) && defined(CPUBLAS_BRGEMM_F32F32F32)
constexpr bool kHasBrgemm = true;
#else
constexpr bool kHasBrgemm = false;
#endif

// B (k x n) in the VNNI layout bf16 brgemm reads: (k / 2, n, 2), pairs of consecutive rows interleaved
at::Tensor vnni(const at::Tensor& b) {
  return b.view({b.size(0) / 2, 2, b.size(1)}).permute({0, 2, 1}).contiguous();
}

bool probe_brgemm_bf16() {
  if constexpr (kHasBrgemm) {
    try {
      const int64_t m = 32, n = 32, k = 64;
      const at::Tensor a = at::arange(m * k, at::kFloat).remainder(7).sub(3).view({m, k}).to(at::kBFloat16);
      const at::Tensor b = at::arange(k * n, at::kFloat).remainder(5).sub(2).view({k, n}).to(at::kBFloat16);
      const at::Tensor packed = vnni(b);
      const at::Tensor c = at::empty({m, n}, at::kFloat);
      at::native::cpublas::brgemm(m, n, k, k, n, n, false, a.const_data_ptr<at::BFloat16>(),
                                  packed.const_data_ptr<at::BFloat16>(), c.data_ptr<float>(), true);
      at::native::cpublas::brgemm_release(true);
      return at::equal(c, at::mm(a.to(at::kFloat), b.to(at::kFloat)));  // small integers: exact either way
    } catch (const std::exception&) {  // no oneDNN ukernel, or no bf16 support in it for this CPU
      return false;
    }
  }
  return false;
}

}  // namespace

bool brgemm_bf16_works() {
  static const bool works = probe_brgemm_bf16();
  return works;
}

Engine resolve_engine(Engine requested, at::ScalarType mm_dtype, at::ScalarType acc_dtype) {
  const bool brgemm = acc_dtype == at::kFloat && ((mm_dtype == at::kBFloat16 && brgemm_bf16_works()) ||
                                                 (mm_dtype == at::kFloat && kHasBrgemm));
  if (requested == Engine::kBrgemm) {
    TORCH_CHECK(brgemm, "the brgemm engine cannot multiply ", mm_dtype, " into ", acc_dtype, " here");
  }
  if (requested == Engine::kAuto) return brgemm ? Engine::kBrgemm : Engine::kAten;
  return requested;
}

void pack_pairs(const at::Tensor& src, const at::Tensor& pairs) {
  const int64_t k = src.size(0), n = src.size(1), even = k / 2 * 2;
  const at::Tensor out = pairs.narrow(1, 0, n);
  // (even, n) -> (even / 2, 2, n) -> (even / 2, n, 2)
  out.narrow(0, 0, even / 2).copy_(src.narrow(0, 0, even).unflatten(0, {even / 2, 2}).permute({0, 2, 1}));
  if (even < k) out.select(0, even / 2).select(1, 0).copy_(src.select(0, even));
}

LogitsProduct::LogitsProduct(int64_t dim, at::ScalarType mm_dtype, at::ScalarType acc_dtype, Engine engine,
                             int64_t tile_vocab, int64_t tile_tokens, int64_t threads)
    : dim_(dim),
      mm_dtype_(mm_dtype),
      acc_dtype_(acc_dtype),
      engine_(resolve_engine(engine, mm_dtype, acc_dtype)),
      vnni_(engine_ == Engine::kBrgemm && mm_dtype == at::kBFloat16),
      tile_vocab_(tile_vocab),
      tile_tokens_(round_up(tile_tokens, kColumnAlign)) {
  depth_ = vnni_ ? round_up(dim, 2) : dim;
  const int64_t size = tile_vocab_ * tile_tokens_;
  head_buffer_.resize(threads);
  for (int64_t i = 0; i < threads; ++i) {
    out_.push_back(at::empty({size}, at::TensorOptions().dtype(acc_dtype)));
    if (engine_ == Engine::kAten && mm_dtype != acc_dtype) {
      mm_out_.push_back(at::empty({size}, at::TensorOptions().dtype(mm_dtype)));
    }
  }
}

int64_t LogitsProduct::tile_columns(int64_t t) const {
  return std::min(tile_tokens_, positions_ - t * tile_tokens_);
}

int64_t LogitsProduct::tile_stride(int64_t t) const { return round_up(tile_columns(t), kColumnAlign); }

void LogitsProduct::set_tokens(const at::Tensor& hidden_rows) {
  positions_ = hidden_rows.size(0);
  num_tiles_ = (positions_ + tile_tokens_ - 1) / tile_tokens_;
  const at::Tensor h = hidden_rows.to(mm_dtype_).contiguous();
  // zeros: padded columns (positions) and the padded depth row contribute nothing
  panels_ = at::zeros({num_tiles_, depth_ * tile_tokens_}, h.options());
  parallel_for(0, num_tiles_, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t cols = tile_columns(t), ld = tile_stride(t);
      const at::Tensor src = h.narrow(0, t * tile_tokens_, cols);  // (cols, D)
      const at::Tensor panel = panels_[t].narrow(0, 0, depth_ * ld);
      if (!vnni_) {  // H^T (D, ld)
        panel.view({depth_, ld}).narrow(1, 0, cols).copy_(src.t());
        continue;
      }
      pack_pairs(src.t(), panel.view({depth_ / 2, ld, 2}));
    }
  });
}

at::Tensor LogitsProduct::head_rows(const at::Tensor& weight, int64_t v0, int64_t width, int64_t tid) {
  if (weight.scalar_type() == mm_dtype_ && depth_ == dim_) return weight.narrow(0, v0, width);
  at::Tensor& buffer = head_buffer_[tid];
  if (!buffer.defined() || buffer.numel() < width * depth_) {
    buffer = at::zeros({width * depth_}, weight.options().dtype(mm_dtype_));  // the padded column stays 0
  }
  const at::Tensor rows = buffer.narrow(0, 0, width * depth_).view({width, depth_});
  rows.narrow(1, 0, dim_).copy_(weight.narrow(0, v0, width));
  return rows;
}

at::Tensor LogitsProduct::tile(const at::Tensor& rows, int64_t j0, int64_t width, int64_t t, int64_t tid) {
  const int64_t ld = tile_stride(t);
  const at::Tensor c = out_[tid].narrow(0, 0, width * ld).view({width, ld});
  const at::Tensor a = rows.narrow(0, j0, width);
  const at::Tensor panel = panels_[t];
  if (engine_ == Engine::kBrgemm) {
    if constexpr (kHasBrgemm) {
      OneThread one_thread;  // where oneDNN's microkernel is missing, brgemm falls back to a BLAS gemm
      if (vnni_) {
        at::native::cpublas::brgemm(width, ld, depth_, a.stride(0), ld, ld, false, a.const_data_ptr<at::BFloat16>(),
                                    panel.const_data_ptr<at::BFloat16>(), c.data_ptr<float>(), true);
      } else {
        at::native::cpublas::brgemm(width, ld, depth_, a.stride(0), ld, ld, false, a.const_data_ptr<float>(),
                                    panel.const_data_ptr<float>(), c.data_ptr<float>(), false);
      }
    }
    return c;
  }
  const at::Tensor b = panel.narrow(0, 0, depth_ * ld).view({depth_, ld});
  if (mm_out_.empty()) {
    product(c, a, b, false);
  } else {
    const at::Tensor narrow = mm_out_[tid].narrow(0, 0, width * ld).view({width, ld});
    product(narrow, a, b, false);
    c.copy_(narrow);
  }
  return c;
}

void LogitsProduct::release() const {
  if constexpr (kHasBrgemm) {
    if (vnni_) at::native::cpublas::brgemm_release(true);
  }
}

}  // namespace endokernel
