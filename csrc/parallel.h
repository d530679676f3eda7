// at::parallel_for whose workers run in the calling thread's thread-local state.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <cstdint>

namespace endokernel {

// ATen's OpenMP workers do not inherit the caller's inference mode, grad mode or dispatch keys: under
// torch.inference_mode() the buffers the kernels allocate are inference tensors, and a worker's in-place ATen op
// on one (mm_out, copy_, add_) raises "Inplace update to inference tensor outside InferenceMode". Every worker
// therefore enters the caller's state first.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain_size, const F& body) {
  const at::ThreadLocalState state;
  at::parallel_for(begin, end, grain_size, [&](int64_t chunk_begin, int64_t chunk_end) {
    const at::ThreadLocalStateGuard guard(state);
    body(chunk_begin, chunk_end);
  });
}

}  // namespace endokernel
