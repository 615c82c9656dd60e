// Input checks shared by every op. Each message names the op, the argument
// and the offending value, so a user sees what to fix without a debugger.
//
// One error convention for the whole library (the Python wrappers raise the
// same types, pyreid/ops/_checks.py):
//   TORCH_CHECK_TYPE   a wrong dtype                                -> TypeError
//   TORCH_CHECK_VALUE  any other bad argument: rank, shape, size,
//                      range, unknown name, NaN, device mix         -> ValueError
// A plain TORCH_CHECK (RuntimeError) is left for failures that are not the
// caller's input (CUDA errors, internal invariants).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace pyreid {

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": ", name, " must be a ", dim, "-D tensor, got ", t.dim(),
                    "-D with shape ", t.sizes());
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
}

// `expected` spells the dtype as users write it ("int64", "float32").
inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* expected, const char* op,
                        const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, op, ": ", name, " must be ", expected, ", got ", t.scalar_type());
}

inline void check_same_dtype(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name_a,
                             const char* name_b) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " is ", a.scalar_type(), " but ", name_b,
                   " is ", b.scalar_type(), "; cast one of them");
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op,
                              const char* name_a, const char* name_b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", name_a, " is on ", a.device(), " but ", name_b,
                    " is on ", b.device(), "; move both to the same device");
}

// Whether every entry is finite. NaN and Inf propagate through a sum, so
// finite row sums prove every entry finite; only a non-finite sum (a real
// NaN/Inf, or an overflow of large finite values) needs the element-wise
// test. The row sums read the tensor once; isfinite(t).all() also writes and
// reads a bool copy (0.18 s against 0.008 s for 12,936 x 2,048 float32 on
// 2 CPU cores). One reduction and one sync in the common case.
inline bool all_finite(const at::Tensor& t) {
  if (t.dim() > 0 && at::isfinite(t.sum(-1)).all().item<bool>()) return true;
  return at::isfinite(t).all().item<bool>();
}

// Acceptable once per call on the inputs, never inside a loop.
inline void check_finite(const at::Tensor& t, const char* op, const char* name) {
  if (t.numel() == 0) return;
  TORCH_CHECK_VALUE(all_finite(t), op, ": ", name,
                    " contains NaN or Inf; clean the features first (e.g. torch.nan_to_num)");
}

}  // namespace pyreid
