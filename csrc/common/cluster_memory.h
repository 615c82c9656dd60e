// Arithmetic of the cluster-memory update shared by the CPU and CUDA kernels,
// so the CPU tests exercise the exact formulas the GPU runs.
//
// One update of a memory row r with a sample x (momentum m):
//   r <- m * r + (1 - m) * x            (blend, element by element, float32)
//   r <- r * (1 / max(||r||, 1e-12))    (normalise, as F.normalize does, but
//                                        multiplying by the reciprocal: within
//                                        one float32 rounding of its division
//                                        and several times cheaper on the CPU)
#pragma once

#include <cmath>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "common/checks.h"
#include "common/host_device.h"

namespace pyreid {

enum class MemoryUpdateMode : int { Momentum = 0, Hard = 1 };

inline MemoryUpdateMode parse_memory_update_mode(const std::string& name, const char* op) {
  if (name == "momentum") return MemoryUpdateMode::Momentum;
  if (name == "hard") return MemoryUpdateMode::Hard;
  TORCH_CHECK(false, op, ": unknown mode '", name, "'; expected 'momentum' or 'hard'");
}

inline void check_momentum(double momentum, const char* op) {
  // Written so that NaN fails too.
  TORCH_CHECK(momentum >= 0.0 && momentum <= 1.0, op, ": momentum must be in [0, 1], got ", momentum);
}

inline void check_cluster_memory_update_args(const at::Tensor& memory, const at::Tensor& inputs,
                                             const at::Tensor& targets, double momentum, const char* op) {
  check_dim(memory, 2, op, "memory");
  check_dim(inputs, 2, op, "inputs");
  check_dim(targets, 1, op, "targets");
  TORCH_CHECK(memory.scalar_type() == at::kFloat, op, ": memory must be float32, got ", memory.scalar_type());
  const auto in_type = inputs.scalar_type();
  TORCH_CHECK(in_type == at::kFloat || in_type == at::kHalf || in_type == at::kBFloat16, op,
              ": inputs must be float32, float16 or bfloat16, got ", in_type);
  TORCH_CHECK(targets.scalar_type() == at::kLong, op, ": targets must be int64, got ", targets.scalar_type());
  check_same_device(memory, inputs, op, "memory", "inputs");
  check_same_device(memory, targets, op, "memory", "targets");
  TORCH_CHECK(inputs.size(1) == memory.size(1), op, ": inputs have ", inputs.size(1),
              " features per row but memory has ", memory.size(1));
  TORCH_CHECK(targets.size(0) == inputs.size(0), op, ": inputs have ", inputs.size(0), " rows but targets has ",
              targets.size(0), " labels");
  check_momentum(momentum, op);
}

// The blended value of one memory element before normalisation.
PYREID_HOST_DEVICE float momentum_blend(float momentum, float memory_value, float sample_value) {
  return momentum * memory_value + (1.0f - momentum) * sample_value;
}

// The factor that normalises a row whose sum of squares is sum_sq.
PYREID_HOST_DEVICE float normalise_scale(float sum_sq) {
  const float norm = sqrtf(sum_sq);
  return 1.0f / (norm > 1e-12f ? norm : 1e-12f);
}

// Hard mode keeps the sample with the smallest similarity, the first one on
// ties: a candidate replaces the current pick only when strictly smaller.
PYREID_HOST_DEVICE bool replaces_hardest(float candidate_dot, float hardest_dot) {
  return candidate_dot < hardest_dot;
}

}  // namespace pyreid
