// knn_row_max(x, k, metric) -> (distances, indices, row_max)
//
//   x          N x D floating tensor, searched against itself (as knn with
//              y = None: every point is its own first neighbour)
//   k          1 <= k <= N
//   metric     "sqeuclidean" | "euclidean" | "cosine"
//   distances, indices   exactly knn(x, None, k, metric)'s
//   row_max    N, dtype of x: max over j != i of d(i, j), 0 when N = 1
//
// The original k-reciprocal re-ranking divides every row of the distance
// matrix by its maximum before encoding it. The kNN pass already evaluates
// every pair, so the maxima come from the same distances instead of a second
// N x N pass: on the CPU each pair once, from the symmetric tiles (row_max is
// then exactly symmetric in its pairs); on CUDA the selection kernel reduces
// each row's maximum while it reads the row's tile. This is pyreid's one row
// maximum: jaccard_graph ("original") and re_ranking take theirs from here.
// Errors as knn's (common/checks.h).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def("knn_row_max(Tensor x, int k, str metric) -> (Tensor, Tensor, Tensor)");
}
