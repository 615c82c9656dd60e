// knn(x, y, k, metric) -> (distances, indices)
//
//   x        N x D floating tensor (queries)
//   y        M x D tensor of the same dtype and device (the data set), or None:
//            the data set is x itself and every point is its own first
//            neighbour (distance 0, then the k - 1 nearest other points)
//   k        1 <= k <= M
//   metric   "sqeuclidean" | "euclidean" | "cosine", as pairwise_distance
//   distances  N x k, dtype of x, ascending
//   indices    N x k int64 into y; ties go to the smaller index
//
// Exact (not approximate). Distances are computed tile by tile (matrix
// product + fused selection into a running top-k per row), so memory beyond
// inputs and outputs is bounded by one tile: the N x M matrix never exists.
// There is no cap on k. Not differentiable (indices are integers; gather the
// distances again with pairwise_distance if you need gradients).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(pyreid, m) {
  m.def("knn(Tensor x, Tensor? y, int k, str metric) -> (Tensor, Tensor)");
}
