// Input checks shared by every op. Each message names the op, the argument
// and the offending value, so a user sees what to fix without a debugger.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace pyreid {

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be a ", dim, "-D tensor, got ", t.dim(),
              "-D with shape ", t.sizes());
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op,
                              const char* name_a, const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", name_a, " is on ", a.device(), " but ", name_b,
              " is on ", b.device(), "; move both to the same device");
}

// One device-wide reduction and one sync: acceptable once per call on the
// inputs, never inside a loop.
inline void check_finite(const at::Tensor& t, const char* op, const char* name) {
  if (t.numel() == 0) return;
  TORCH_CHECK(at::isfinite(t).all().item<bool>(), op, ": ", name,
              " contains NaN or Inf; clean the features first (e.g. torch.nan_to_num)");
}

// Checks for ops that read an N x D feature matrix x and an optional M x D
// matrix y (y absent: x is compared with itself).
inline void check_feature_pair(const at::Tensor& x, const std::optional<at::Tensor>& y,
                               const char* op) {
  check_dim(x, 2, op, "x");
  check_floating(x, op, "x");
  if (y.has_value()) {
    check_dim(*y, 2, op, "y");
    check_floating(*y, op, "y");
    check_same_device(x, *y, op, "x", "y");
    TORCH_CHECK(x.scalar_type() == y->scalar_type(), op, ": x is ", x.scalar_type(), " but y is ",
                y->scalar_type(), "; cast one of them");
    TORCH_CHECK(x.size(1) == y->size(1), op, ": x has ", x.size(1), " features per row but y has ",
                y->size(1));
  }
  check_finite(x, op, "x");
  if (y.has_value()) check_finite(*y, op, "y");
}

// A neighbour count k for m candidates (the rows of y, or the points
// themselves when y is absent).
inline void check_k(int64_t k, int64_t m, bool self, const char* op) {
  TORCH_CHECK(k >= 1 && k <= m, op, ": k must be in [1, ", m, "] (the number of ", self ? "points" : "rows of y",
              "), got k=", k);
}

}  // namespace pyreid
