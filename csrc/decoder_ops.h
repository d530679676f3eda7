// Two elementwise passes of a transformers decoder layer, fused for CPU scoring (endokernel/hf/fused_body.py
// swaps them in where they reproduce the modules' own forward): RMSNorm in one read and one write of each row,
// and the gated MLP's act(gate) * up in place. Arithmetic in float, rounding where the modules round.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace endokernel {

// out = RMSNorm(x) over the last dimension H of a contiguous x (rows x H), r = 1 / sqrt(mean(x^2) + eps):
// unit_offset false (Llama, Qwen, Mistral): out = weight * round_x(x * r), the product in out's dtype;
// unit_offset true (Gemma): out = round_x(x * r * (1 + weight)). x and out contiguous, weight (H,); x float32 or
// bfloat16, weight and out in x's dtype or float32.
void rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool unit_offset, const at::Tensor& out);

enum class Activation : int64_t { kSilu = 0, kGeluTanh = 1 };

// gate <- round(round(act(gate)) * up), elementwise, as act_fn(gate) * up computes it; gate and up contiguous,
// of one shape and dtype
void act_mul_(const at::Tensor& gate, const at::Tensor& up, Activation activation);

// out[b, i, h, :] = o1[b, h, i, :] * exp(lse1 - lse) + o2[b, h, i, :] * exp(lse2 - lse), lse = log(exp(lse1) +
// exp(lse2)): attention over two disjoint key sets (a cached prompt; the causal response) merged from each one's
// output and log-sum-exp. o1, o2 (B, H, L, Dh) of any strides with Dh contiguous; lse1, lse2 (B, H, L) float32;
// out (B, L, H, Dh) contiguous, the layout the attention modules take their output in; all one dtype but the lse.
void merge_attention(const at::Tensor& o1, const at::Tensor& lse1, const at::Tensor& o2, const at::Tensor& lse2,
                     const at::Tensor& out);

}  // namespace endokernel
