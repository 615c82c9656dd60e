// kreciprocal_jaccard(crow, col, val, expansion, rows, max_distance) -> (crow, col, val)
//
//   crow, col, val  the encoding V as CSR: N + 1 int64, nnz int64 (each row's
//                   columns ascending, in [0, N)), nnz float32 (rows sum to 1)
//   expansion       N x k2 int64: the neighbours averaged by the local query
//                   expansion (self first); k2 = 1 means none
//   rows            0 <= rows <= N: distances are computed for rows [0, rows)
//                   against all N points (re-ranking needs only the queries)
//   max_distance    pairs with distance < max_distance are returned
//   result          rows + 1 int64, nnz int64, nnz float32: the Jaccard
//                   distances as a rows x N CSR matrix, columns ascending;
//                   the diagonal is always stored, zeros stored explicitly
//
// Query expansion: V'[i] = mean(V[expansion[i, t]], t < k2), summed in t
// order. Jaccard: d(i, j) = 1 - s / (2 - s), s = sum_c min(V'[i,c], V'[j,c]),
// clamped at 0; only pairs that share a column of V' have s > 0, so an
// inverted index (column -> rows) finds them and every other pair is at
// distance exactly 1. s is summed over c ascending (deterministic; the order
// of the published code). Memory O(nnz(V') + output): no N x N.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def(
      "kreciprocal_jaccard(Tensor crow, Tensor col, Tensor val, Tensor expansion, int rows, float max_distance)"
      " -> (Tensor, Tensor, Tensor)");
}
