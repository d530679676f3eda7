// One thread's logits tile and the matmul that fills it, shared by the forward and backward tile loops.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace endokernel {

// A reused logits tile in the accumulation dtype, and its matmul-dtype twin where the matmul runs in a
// narrower dtype (bf16 on CPUs with bf16 units: ATen's CPU bf16 matmul returns bf16, converted into the tile).
class TileBuffer {
 public:
  TileBuffer(int64_t size, const at::TensorOptions& acc_options, const at::TensorOptions& mm_options)
      : tile_(at::empty({size}, acc_options)),
        mm_tile_(acc_options.dtype() == mm_options.dtype() ? at::Tensor() : at::empty({size}, mm_options)) {}

  // a (rows, D) @ b (D, cols) into the front of the buffer, as a (rows, cols) tile in the accumulation dtype
  at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) {
    const int64_t rows = a.size(0), cols = b.size(1);
    at::Tensor tile = tile_.narrow(0, 0, rows * cols).view({rows, cols});
    if (mm_tile_.defined()) {
      at::Tensor mm_tile = mm_tile_.narrow(0, 0, rows * cols).view({rows, cols});
      tile.copy_(at::mm_out(mm_tile, a, b));
    } else {
      at::mm_out(tile, a, b);
    }
    return tile;
  }

 private:
  at::Tensor tile_, mm_tile_;
};

}  // namespace endokernel
