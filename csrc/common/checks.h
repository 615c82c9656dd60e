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

#include <cstdint>
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

// at::empty for an output whose size the caller's arguments set (N x M
// distances, N x k lists). When it cannot be allocated (too large for this
// machine, or a byte count past int64) the error is torch's OutOfMemoryError,
// on the CPU as on CUDA, and names the op and the size instead of the
// allocator's line.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options, const char* op,
                               const char* what) {
  try {
    return at::empty(sizes, options);
  } catch (const c10::Error& error) {
    double bytes = static_cast<double>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
    for (const int64_t s : sizes) bytes *= static_cast<double>(s);
    TORCH_CHECK_WITH(OutOfMemoryError, false, op, ": cannot allocate the ", what, " of shape ", sizes, " (",
                     c10::typeMetaToScalarType(options.dtype()), ", ", bytes / 1e9, " GB) on ", options.device(),
                     ": ", error.what_without_backtrace());
  }
}

namespace detail {

// What is wrong with a CSR pattern, or "" when nothing is: crow (n + 1
// offsets) must start at 0, never decrease and end at nnz; every col entry
// must lie in [0, n). crow and col are host arrays. The fast path is one
// branch-free pass over each array (it vectorises); only a broken pattern
// pays for the second pass that finds the first offending position.
inline std::string csr_violation(const int64_t* crow, const int64_t* col, int64_t n, int64_t nnz,
                                 const char* crow_name, const char* col_name) {
  if (crow[0] != 0) return c10::str(crow_name, "[0] = ", crow[0], "; the offsets must start at 0");
  bool decreasing = false;
  for (int64_t i = 0; i < n; ++i) decreasing |= crow[i + 1] < crow[i];
  if (decreasing) {
    for (int64_t i = 0; i < n; ++i) {
      if (crow[i + 1] < crow[i]) {
        return c10::str(crow_name, "[", i + 1, "] = ", crow[i + 1], " is smaller than ", crow_name, "[", i,
                        "] = ", crow[i], "; the offsets must be non-decreasing");
      }
    }
  }
  if (crow[n] != nnz) {
    return c10::str(crow_name, "[", n, "] = ", crow[n], " but ", col_name, " has ", nnz,
                    " entries; the last offset must equal the number of stored entries");
  }
  // One unsigned comparison tests both bounds.
  const auto limit = static_cast<uint64_t>(n);
  bool outside = false;
  for (int64_t p = 0; p < nnz; ++p) outside |= static_cast<uint64_t>(col[p]) >= limit;
  if (outside) {
    for (int64_t p = 0; p < nnz; ++p) {
      if (static_cast<uint64_t>(col[p]) >= limit) {
        return c10::str(col_name, "[", p, "] = ", col[p], " is out of range [0, ", n, ")");
      }
    }
  }
  return std::string();
}

}  // namespace detail

// The one check of a CSR pattern (crow, col) of n rows over n columns, for
// every op that reads one (dbscan_csr, kreciprocal_weights,
// kreciprocal_jaccard): 1-D int64 tensors (else TypeError), crow with n + 1
// entries starting at 0, non-decreasing, ending at nnz = col.numel(), and col
// in [0, n). The kernels index with these values, so nothing past this check
// can read out of bounds. O(n + nnz): on the CPU one pass over each array; on
// another device one fused reduction (one host sync), and only a broken
// pattern is copied to the host to name the offending position.
inline void check_csr(const at::Tensor& crow, const at::Tensor& col, int64_t n, const char* op,
                      const char* crow_name, const char* col_name) {
  check_dim(crow, 1, op, crow_name);
  check_dim(col, 1, op, col_name);
  check_dtype(crow, at::kLong, "int64", op, crow_name);
  check_dtype(col, at::kLong, "int64", op, col_name);
  check_same_device(crow, col, op, crow_name, col_name);
  TORCH_CHECK_VALUE(n >= 0 && crow.numel() == n + 1, op, ": ", crow_name, " must have N + 1 = ", n + 1,
                    " entries for N = ", n, " rows, got ", crow.numel());
  const int64_t nnz = col.numel();
  if (!crow.is_cpu()) {
    at::Tensor ok = at::logical_and(crow.select(0, 0) == 0, crow.select(0, n) == nnz);
    if (n > 0) ok = at::logical_and(ok, (crow.diff() >= 0).all());
    if (nnz > 0) ok = at::logical_and(ok, at::logical_and(col >= 0, col < n).all());
    if (ok.item<bool>()) return;
  }
  const at::Tensor crow_h = crow.cpu().contiguous(), col_h = col.cpu().contiguous();
  const std::string problem =
      detail::csr_violation(crow_h.data_ptr<int64_t>(), col_h.data_ptr<int64_t>(), n, nnz, crow_name, col_name);
  TORCH_CHECK_VALUE(problem.empty(), op, ": (", crow_name, ", ", col_name, ") is not a CSR pattern of N = ", n,
                    " rows: ", problem);
}

}  // namespace pyreid
