// Transposed logits tiles, C (width x n) = W[j0 : j0 + width] . H_tile^T in the accumulation dtype: vocabulary
// ids in rows, positions in columns. The head's rows are the A operand as stored; each token tile of hidden
// rows is packed once per token block as the B operand ("panel").
//
// Two engines. ``kBrgemm``: oneDNN's batch-reduce GEMM microkernel through ATen (at::native::cpublas::brgemm,
// the one ATen's CPU flash attention uses): bf16 inputs on AMX (or AVX512-BF16) with fp32 results, fp32 inputs
// in fp32; single-threaded by construction. ``kAten``: at::mm through ``product`` (tile.h), whose bf16 results
// come back rounded to bf16; used for float64, and where brgemm cannot run (an ISA or a torch without it).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace endokernel {

enum class Engine { kAuto = 0, kBrgemm = 1, kAten = 2 };

// The engine ``requested`` resolves to for these dtypes on this CPU (kAuto: brgemm wherever it runs).
Engine resolve_engine(Engine requested, at::ScalarType mm_dtype, at::ScalarType acc_dtype);

// Whether brgemm multiplies bf16 into fp32 here (probed once: a small product checked against at::mm).
bool brgemm_bf16_works();

// src (k x n, any strides) into ``pairs`` (at least ceil(k / 2) x n x 2, row stride ldb * 2), the VNNI layout
// bf16 brgemm reads its B operand in: element (i, j) at [i / 2][j][i % 2]. An odd k's last pair is left as is.
void pack_pairs(const at::Tensor& src, const at::Tensor& pairs);

class LogitsProduct {
 public:
  // tile_tokens: columns per token tile (rounded up to a multiple of kColumnAlign); threads: scratch tiles
  LogitsProduct(int64_t dim, at::ScalarType mm_dtype, at::ScalarType acc_dtype, Engine engine, int64_t tile_vocab,
                int64_t tile_tokens, int64_t threads);

  // Columns of every tile buffer are padded to a multiple of this (a vector of floats on any ISA).
  static constexpr int64_t kColumnAlign = 16;

  // Packs hidden rows (positions x D, any float dtype) as the panels of ceil(positions / tile_tokens) tiles.
  // Main thread (the copies inside are parallel).
  void set_tokens(const at::Tensor& hidden_rows);
  int64_t num_tiles() const { return num_tiles_; }
  int64_t tile_tokens() const { return tile_tokens_; }  // positions per token tile (the last may hold fewer)
  int64_t tile_columns(int64_t t) const;  // positions in token tile t
  int64_t tile_stride(int64_t t) const;   // its padded column count: the row stride of its C tiles

  // The head's rows [v0, v0 + width) as this engine's A operand: a view of ``weight`` where it is already in
  // the matmul dtype (and D fits the engine), else a converted copy in thread ``tid``'s buffer (reused).
  at::Tensor head_rows(const at::Tensor& weight, int64_t v0, int64_t width, int64_t tid);

  // Worker thread ``tid``: the tile of head rows [j0, j0 + width) of ``rows`` (from head_rows) against token
  // tile t, into that thread's scratch: a (width x tile_stride(t)) tensor in the accumulation dtype.
  at::Tensor tile(const at::Tensor& rows, int64_t j0, int64_t width, int64_t t, int64_t tid);

  // Worker thread: ends its use of the matrix units. Call it after its last tile of a parallel region, and
  // before any other matmul on the thread: oneDNN's own kernels (at::mm) leave the units unconfigured, and the
  // next tile would then fault (SIGILL) without this.
  void release() const;

  Engine engine() const { return engine_; }

 private:
  int64_t dim_, depth_;  // D, and D rounded up to even for VNNI-packed bf16
  at::ScalarType mm_dtype_, acc_dtype_;
  Engine engine_;
  bool vnni_;
  int64_t tile_vocab_, tile_tokens_;
  int64_t positions_ = 0, num_tiles_ = 0;
  at::Tensor panels_;  // (tiles, depth * padded tile_tokens) in the matmul dtype
  std::vector<at::Tensor> head_buffer_;  // per thread
  std::vector<at::Tensor> out_;  // per thread: tile_vocab * padded tile_tokens, accumulation dtype
  std::vector<at::Tensor> mm_out_;  // per thread, kAten with a narrower matmul dtype: its results before widening
};

}  // namespace endokernel
