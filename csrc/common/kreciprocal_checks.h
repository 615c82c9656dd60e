// Input checks of kreciprocal_sets and kreciprocal_jaccard, shared by the CPU
// and CUDA kernels so both raise the same messages. Value checks are tensor
// reductions: they run on either device (one host sync each on CUDA, on the
// inputs only, once per call).
#pragma once

#include <ATen/ATen.h>

#include "common/checks.h"

namespace pyreid {

// neighbors: N x K int64 lists with k1 <= K <= N, entries in [0, N); 1 <= k1 < N.
inline void check_kreciprocal_sets_args(const at::Tensor& neighbors, int64_t k1, const char* op) {
  check_dim(neighbors, 2, op, "neighbors");
  TORCH_CHECK(neighbors.scalar_type() == at::kLong, op, ": neighbors must be int64, got ", neighbors.scalar_type());
  const int64_t n = neighbors.size(0), k = neighbors.size(1);
  TORCH_CHECK(k1 >= 1 && k1 < n, op, ": k1 must be in [1, N - 1] = [1, ", n - 1, "], got k1=", k1);
  TORCH_CHECK(k >= k1 && k <= n, op, ": neighbors must have between k1 = ", k1, " and N = ", n, " columns, got ",
              k);
  TORCH_CHECK(at::logical_and(neighbors >= 0, neighbors < n).all().item<bool>(), op,
              ": neighbors must be indices in [0, ", n, ")");
}

// V as CSR (crow N + 1, col and val nnz, col in [0, N)), expansion N x k2
// (k2 >= 1, entries in [0, N)), 0 <= rows <= N, all on one device.
inline void check_kreciprocal_jaccard_args(const at::Tensor& crow, const at::Tensor& col, const at::Tensor& val,
                                           const at::Tensor& expansion, int64_t rows, const char* op) {
  check_dim(crow, 1, op, "crow");
  check_dim(col, 1, op, "col");
  check_dim(val, 1, op, "val");
  check_dim(expansion, 2, op, "expansion");
  TORCH_CHECK(crow.scalar_type() == at::kLong && col.scalar_type() == at::kLong &&
                  expansion.scalar_type() == at::kLong,
              op, ": crow, col and expansion must be int64");
  TORCH_CHECK(val.scalar_type() == at::kFloat, op, ": val must be float32, got ", val.scalar_type());
  check_same_device(crow, val, op, "crow", "val");
  check_same_device(col, val, op, "col", "val");
  check_same_device(expansion, val, op, "expansion", "val");
  const int64_t n = crow.size(0) - 1;
  TORCH_CHECK(n >= 0, op, ": crow must have N + 1 entries, got an empty tensor");
  const int64_t nnz = col.size(0);
  TORCH_CHECK(nnz == val.size(0), op, ": col has ", nnz, " entries but val has ", val.size(0));
  TORCH_CHECK(expansion.size(0) == n && expansion.size(1) >= 1, op, ": expansion must be N x k2 with N = ", n,
              " and k2 >= 1, got shape ", expansion.sizes());
  TORCH_CHECK(rows >= 0 && rows <= n, op, ": rows must be in [0, ", n, "], got ", rows);
  TORCH_CHECK(crow.select(0, 0).item<int64_t>() == 0 && crow.select(0, n).item<int64_t>() == nnz, op,
              ": crow must start at 0 and end at nnz = ", nnz);
  if (nnz > 0) {
    TORCH_CHECK(at::logical_and(col >= 0, col < n).all().item<bool>(), op, ": col must be in [0, ", n, ")");
  }
  if (expansion.numel() > 0) {
    TORCH_CHECK(at::logical_and(expansion >= 0, expansion < n).all().item<bool>(), op, ": expansion must be in [0, ",
                n, ")");
  }
}

}  // namespace pyreid
