// Input checks of cluster_memory_update_, shared by the CPU and CUDA entry
// points so both raise the same errors (mirrored by the fake kernel in
// pyreid/ops/_checks.py). Error types: common/checks.h.
#pragma once

#include <string>

#include <ATen/ATen.h>

#include "common/checks.h"
#include "common/cluster_memory.h"

namespace pyreid {

inline MemoryUpdateMode parse_memory_update_mode(const std::string& name, const char* op) {
  if (name == "momentum") return MemoryUpdateMode::Momentum;
  if (name == "hard") return MemoryUpdateMode::Hard;
  TORCH_CHECK_VALUE(false, op, ": unknown mode '", name, "'; expected 'momentum' or 'hard'");
}

// memory K x D float32; inputs B x D float32/float16/bfloat16; targets B
// int64; one device; momentum in [0, 1]; mode "momentum" or "hard". The
// labels' range needs their values: check_targets_in_range on the CPU, a
// device-side assertion on CUDA (no host sync).
inline MemoryUpdateMode check_cluster_memory_update_args(const at::Tensor& memory, const at::Tensor& inputs,
                                                         const at::Tensor& targets, double momentum,
                                                         const std::string& mode, const char* op) {
  check_dim(memory, 2, op, "memory");
  check_dim(inputs, 2, op, "inputs");
  check_dim(targets, 1, op, "targets");
  check_dtype(memory, at::kFloat, "float32", op, "memory");
  const auto in_type = inputs.scalar_type();
  TORCH_CHECK_TYPE(in_type == at::kFloat || in_type == at::kHalf || in_type == at::kBFloat16, op,
                   ": inputs must be float32, float16 or bfloat16, got ", in_type);
  check_dtype(targets, at::kLong, "int64", op, "targets");
  check_same_device(memory, inputs, op, "memory", "inputs");
  check_same_device(memory, targets, op, "memory", "targets");
  TORCH_CHECK_VALUE(inputs.size(1) == memory.size(1), op, ": inputs have ", inputs.size(1),
                    " features per row but memory has ", memory.size(1));
  TORCH_CHECK_VALUE(targets.size(0) == inputs.size(0), op, ": inputs have ", inputs.size(0),
                    " rows but targets has ", targets.size(0), " labels");
  // Written so that NaN fails too.
  TORCH_CHECK_VALUE(momentum >= 0.0 && momentum <= 1.0, op, ": momentum must be in [0, 1], got ", momentum);
  return parse_memory_update_mode(mode, op);
}

// NaN or Inf in the inputs would spread into every memory row it touches.
// On the CPU this check runs before anything is written (ValueError). The
// CUDA kernel makes the same test on the device, without a host sync: a
// batch with a non-finite value writes nothing and trips a device-side
// assertion, as an out-of-range label does.
inline void check_inputs_finite(const at::Tensor& inputs, const char* op) {
  if (inputs.numel() == 0) return;
  TORCH_CHECK_VALUE(all_finite(inputs), op,
                    ": inputs contain NaN or Inf; nothing was written to the memory (check the features first)");
}

// labels: the batch's targets on the host.
inline void check_targets_in_range(const int64_t* labels, int64_t batch, int64_t num_rows, const char* op) {
  for (int64_t i = 0; i < batch; ++i) {
    TORCH_CHECK_VALUE(labels[i] >= 0 && labels[i] < num_rows, op, ": targets[", i, "] = ", labels[i],
                      " is out of range for a memory of ", num_rows, " rows");
  }
}

}  // namespace pyreid
